"""Read a segment snapshot (CSV or JSON Lines, optionally gzip-compressed, or a CDM entity's CSV
partitions) as mapped records, memory flat in its size and every input bounded.

`snapshot.open_snapshot` is the way in. The modules, from the bytes up:
- `input_limits`: every bound on the input (what a hostile file can cost).
- `formats`: the format a file name announces; files exported by mistake, by their first bytes.
- `line_bounds`: the byte layer that counts (to place errors) and hands on whole lines only,
  cutting a line over the limit without keeping it.
- `text_file`: one file as UTF-8 text (gzip by magic), and its first non-blank line.
- `csv_rows`, `jsonl_rows`: where a profile is parsed: the header (or first record), then rows.
- `parts`: a snapshot stored as several CSV files read as one (`Parts`).
- `records`: what the readers hand on: mapped values, `BLANK` or a `RowProblem`.
- `snapshot`: `Snapshot`, which puts them together.
"""
