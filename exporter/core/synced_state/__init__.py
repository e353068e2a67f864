"""Synced state: which contacts a destination's list may hold from one segment, and in what form.

A run compares each valid contact with the state of the destination x segment x list and sends
only the new and the changed ones. A run writes its state beside itself; when the run ends,
whatever its outcome, the state the next run compares against is committed from it
(`exporter.flow.commit`): every member that may now be on the list is in it, those whose
contact may not have landed marked `UNSENT` (sent again, or removed in mirror mode if they
left).

The modules:
- `keys`: the 64-bit keys of emails and contacts, and `KeySet`, a compact set of them.
- `state`: a state as stored (its `index` and `emails` blobs) and loaded (`SyncedState`).
- `delta`: where a run's contacts are diffed against the old state (`Delta`, `Resend`).
- `writing`: a new state collected on disk, sorted, merged and written (`write_state`).
"""
