/* Live updates of the runs list and of a run's page (no framework, nothing from the internet).
 *
 * A run's page: while the run has not ended, GET its progress.json every second and update, in
 * place, the status region ("Run state", aria-live polite by its role), the progress bar (value
 * and aria-valuetext), the stages and the numbers. Once the run has ended, the rest of the page
 * (rejected rows, batches, verification, timeline) is fetched once more and swapped in, and the
 * polling stops. The runs list: while a listed run has not ended, GET runs.json (the same filters)
 * every two seconds and update each row's state badge and numbers.
 *
 * A failed poll is tried again, slower (at most every 15 s); signed out (401): stop and say so.
 */
(function () {
  "use strict";

  var RUN_EVERY = 1000;
  var LIST_EVERY = 2000;
  var MAX_EVERY = 15000;

  function getJson(url) {
    return fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store"
    }).then(function (answer) {
      if (!answer.ok) {
        var error = new Error("HTTP " + answer.status);
        error.status = answer.status;
        throw error;
      }
      return answer.json();
    });
  }

  function setText(element, text) {
    if (element && element.textContent !== text) {
      element.textContent = text;
    }
  }

  function say(where, text) {
    var note = document.getElementById(where);
    if (note) {
      note.textContent = text;
    }
  }

  /* --- a run's page ------------------------------------------------------------------------ */

  function followRun(section) {
    var url = section.getAttribute("data-progress-url");
    var delay = RUN_EVERY;
    var stateBadge = document.getElementById("run-state-badge");
    var bar = document.getElementById("run-progress");
    var valuetext = document.getElementById("run-valuetext");

    function apply(data) {
      if (stateBadge) {
        setText(stateBadge, data.state);
        stateBadge.className = data.badge;
      }
      if (bar) {
        bar.value = data.percent;
        bar.textContent = data.percent + "%";
        bar.setAttribute("aria-valuetext", data.valuetext);
      }
      setText(valuetext, data.valuetext);
      data.stages.forEach(function (stage) {
        var item = section.querySelector('[data-stage="' + stage.name + '"]');
        if (!item) {
          return;
        }
        item.className = "stage stage-" + stage.status;
        setText(item.querySelector("[data-stage-text]"), stage.text);
        setText(item.querySelector("[data-stage-status]"), "(" + stage.status + ")");
      });
      Object.keys(data.shown).forEach(function (key) {
        setText(section.querySelector('[data-number="' + key + '"]'), data.shown[key]);
      });
    }

    function refreshDetails() {
      /* The run ended: the sections below the bar as the server renders them now. */
      return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (answer) {
          return answer.ok ? answer.text() : null;
        })
        .then(function (html) {
          if (!html) {
            return;
          }
          var fresh = new DOMParser().parseFromString(html, "text/html");
          var details = fresh.getElementById("run-details");
          var current = document.getElementById("run-details");
          if (details && current) {
            current.replaceWith(document.importNode(details, true));
          }
        })
        .catch(function () {
          say("run-live-note", "The run ended; reload the page for its details.");
        });
    }

    function poll() {
      getJson(url)
        .then(function (data) {
          apply(data);
          delay = RUN_EVERY;
          if (data.final) {
            section.setAttribute("data-final", "true");
            say("run-live-note", "The run has ended.");
            refreshDetails();
            return;
          }
          window.setTimeout(poll, delay);
        })
        .catch(function (error) {
          if (error.status === 401) {
            say("run-live-note", "Signed out: sign in again to follow this run.");
            return;
          }
          delay = Math.min(MAX_EVERY, delay * 2);
          say("run-live-note", "Could not read the run's progress (" + error.message + "); trying again.");
          window.setTimeout(poll, delay);
        });
    }

    window.setTimeout(poll, delay);
  }

  /* --- the runs list ----------------------------------------------------------------------- */

  function followList(table) {
    var url = table.getAttribute("data-live-url");
    var delay = LIST_EVERY;

    function apply(data) {
      data.runs.forEach(function (run) {
        var row = table.querySelector('tr[data-run-id="' + CSS.escape(run.run_id) + '"]');
        if (!row) {
          return;
        }
        var stateBadge = row.querySelector('[data-live="state"]');
        if (stateBadge) {
          setText(stateBadge, run.state);
          stateBadge.className = run.badge;
        }
        ["rows", "rejected", "sent"].forEach(function (key) {
          setText(row.querySelector('[data-live="' + key + '"]'), run[key].toLocaleString("en-US"));
        });
      });
    }

    function poll() {
      getJson(url)
        .then(function (data) {
          apply(data);
          delay = LIST_EVERY;
          if (data.final) {
            say("runs-live-note", "Every listed run has ended.");
            return;
          }
          window.setTimeout(poll, delay);
        })
        .catch(function (error) {
          if (error.status === 401) {
            say("runs-live-note", "Signed out: sign in again to follow these runs.");
            return;
          }
          delay = Math.min(MAX_EVERY, delay * 2);
          window.setTimeout(poll, delay);
        });
    }

    window.setTimeout(poll, delay);
  }

  function start() {
    var section = document.getElementById("run-live");
    if (section && section.getAttribute("data-final") !== "true") {
      followRun(section);
    }
    var table = document.getElementById("runs-table");
    if (table && table.hasAttribute("data-live-url")) {
      followList(table);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
