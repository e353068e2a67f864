// The destination form's steps in place: the account's lists, the segment's columns, a live
// preview (debounced), the dry run, the connection test, custom field rows. Without this file
// every step is a submit button of the form and works the same (the page comes back).
// Everything shown is built with textContent: nothing from the server is parsed as HTML.
(function () {
  "use strict";

  var form = document.getElementById("destination-form");
  if (!form) {
    return;
  }
  var live = form.getAttribute("data-live");
  var columns = null; // the latest columns loaded: {columns: [...], suggested: {...}}
  var previewSeq = 0;
  var previewTimer = null;

  function el(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    if (className) {
      node.className = className;
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
  }

  function number(value) {
    return typeof value === "number" ? value.toLocaleString("en") : String(value);
  }

  // POST the form as it stands (its CSRF token included) to one live step.
  function call(step) {
    var data = new FormData(form);
    data.delete("action");
    return fetch(live + "/" + step + ".json", {
      method: "POST",
      body: new URLSearchParams(data),
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    }).then(function (response) {
      return response
        .json()
        .catch(function () {
          return {};
        })
        .then(function (body) {
          if (!response.ok) {
            if (response.status === 401) {
              throw new Error("your session ended: sign in again (reload the page)");
            }
            throw new Error(body.error || "the console answered " + response.status);
          }
          return body;
        });
    });
  }

  function status(id, text, isError) {
    var node = document.getElementById(id);
    if (!node) {
      return;
    }
    clear(node);
    node.className = isError ? "error" : "muted";
    node.textContent = text;
  }

  function busy(button, region, on) {
    if (button) {
      button.disabled = on;
    }
    if (region) {
      region.setAttribute("aria-busy", on ? "true" : "false");
    }
  }

  // --- name from the display name (a new destination, until the name is typed) -----------
  var nameInput = document.getElementById("name");
  var displayInput = document.getElementById("display-name");
  var nameTouched = !nameInput || nameInput.readOnly || nameInput.value !== "";
  if (nameInput && displayInput) {
    nameInput.addEventListener("input", function () {
      nameTouched = true;
    });
    displayInput.addEventListener("input", function () {
      if (nameTouched) {
        return;
      }
      nameInput.value = displayInput.value
        .toLowerCase()
        .normalize("NFKD")
        .replace(/[\u0300-\u036f]/g, "")
        .replace(/[^a-z0-9]+/g, "-")
        .replace(/^-+|-+$/g, "")
        .slice(0, 63)
        .replace(/-+$/g, "");
    });
  }

  // --- the account's lists ------------------------------------------------------------
  function loadLists(button) {
    var select = document.getElementById("list-id");
    var chosen = select.value;
    status("lists-status", "Loading the account's lists…", false);
    busy(button, null, true);
    call("lists")
      .then(function (body) {
        clear(select);
        select.appendChild(el("option", "— choose a list —")).value = "";
        body.lists.forEach(function (item) {
          var option = el("option", item.name + " (" + number(item.contact_count) + " contacts)");
          option.value = item.id;
          option.selected = item.id === chosen;
          select.appendChild(option);
        });
        status("lists-status", body.lists.length + " list(s) in this account.", false);
      })
      .catch(function (error) {
        status("lists-status", error.message, true);
      })
      .then(function () {
        busy(button, null, false);
      });
  }

  // --- the segment's columns ---------------------------------------------------------------
  function fillColumns(select, keep, fallback) {
    var emptyLabel = select.options.length ? select.options[0].textContent : "— not mapped —";
    // A select that already offered columns holds a choice, "not mapped" included: keep it
    // (columns arriving late, or again, never undo what the person chose).
    var chosenBefore = select.options.length > 1;
    clear(select);
    select.appendChild(el("option", emptyLabel)).value = "";
    var names = columns ? columns.columns : [];
    var chosen;
    if (names.indexOf(keep) >= 0 || (chosenBefore && keep === "")) {
      chosen = keep;
    } else {
      chosen = fallback || "";
    }
    names.forEach(function (name) {
      var option = el("option", name);
      option.value = name;
      option.selected = name === chosen;
      select.appendChild(option);
    });
  }

  function loadColumns(button) {
    status("columns-status", "Reading the columns of the segment's latest snapshot…", false);
    busy(button, null, true);
    call("columns")
      .then(function (body) {
        columns = body;
        form.querySelectorAll("select[data-column-select]").forEach(function (select) {
          var field = select.getAttribute("data-field");
          var suggested = field ? body.suggested[field] || "" : "";
          fillColumns(select, select.value, suggested);
        });
        status(
          "columns-status",
          "Columns of segments/" + body.snapshot + " (" + body.format + "), its latest snapshot.",
          false
        );
        refreshPreview(0);
      })
      .catch(function (error) {
        status("columns-status", error.message, true);
      })
      .then(function () {
        busy(button, null, false);
      });
  }

  // --- custom field rows -------------------------------------------------------------------
  function armRow(row) {
    var remove = row.querySelector("[data-remove-row]");
    if (remove) {
      remove.hidden = false;
      remove.addEventListener("click", function () {
        row.parentNode.removeChild(row);
        refreshPreview(300);
        document.querySelector("[data-step='add-field']").focus();
      });
    }
  }

  function addRow() {
    var template = document.getElementById("custom-row-template");
    var row = template.content.firstElementChild.cloneNode(true);
    if (columns) {
      fillColumns(row.querySelector("select[data-column-select]"), "", "");
    }
    document.getElementById("custom-rows").appendChild(row);
    armRow(row);
    row.querySelector("input").focus();
  }

  form.querySelectorAll("[data-custom-row]").forEach(function (row) {
    if (!row.closest("template")) {
      armRow(row);
    }
  });

  // --- preview -----------------------------------------------------------------------------
  function value(contact, field) {
    var found = contact[field];
    if (found === undefined && contact.custom_fields) {
      found = contact.custom_fields[field];
    }
    if (found === undefined || found === null) {
      return "";
    }
    return Array.isArray(found) ? found.join(", ") : String(found);
  }

  function showPreview(body) {
    var holder = document.getElementById("preview-table");
    clear(holder);
    var rejected = 0;
    Object.keys(body.rejected).forEach(function (reason) {
      rejected += body.rejected[reason];
    });
    status(
      "preview-status",
      "The first " + body.contacts.length + " contacts of segments/" + body.snapshot +
        " as SendGrid receives them (" + number(body.rows) + " rows read" +
        (rejected ? ", " + rejected + " rejected" : "") +
        "; custom fields by name here, by id in a run).",
      false
    );
    if (!body.contacts.length) {
      return;
    }
    var table = el("table");
    var head = table.appendChild(el("thead")).appendChild(el("tr"));
    body.fields.forEach(function (field) {
      head.appendChild(el("th", field)).setAttribute("scope", "col");
    });
    var rows = table.appendChild(el("tbody"));
    body.contacts.forEach(function (contact) {
      var tr = rows.appendChild(el("tr"));
      body.fields.forEach(function (field) {
        tr.appendChild(el("td", value(contact, field)));
      });
    });
    holder.appendChild(table);
  }

  function refreshPreview(delay) {
    if (previewTimer) {
      clearTimeout(previewTimer);
    }
    previewTimer = setTimeout(function () {
      var region = document.getElementById("preview");
      var email = document.getElementById("map-email");
      if (!form.elements.segment.value || !email || !email.value) {
        status("preview-status", "Choose a segment and its email column to see its first contacts.", false);
        clear(document.getElementById("preview-table"));
        return;
      }
      var seq = ++previewSeq;
      busy(null, region, true);
      call("preview")
        .then(function (body) {
          if (seq === previewSeq) {
            showPreview(body);
          }
        })
        .catch(function (error) {
          if (seq === previewSeq) {
            clear(document.getElementById("preview-table"));
            status("preview-status", error.message, true);
          }
        })
        .then(function () {
          if (seq === previewSeq) {
            busy(null, region, false);
          }
        });
    }, delay);
  }

  // --- dry run -----------------------------------------------------------------------------
  function showDryRun(body, holder) {
    var facts = el("dl", null, "facts");
    [
      ["Snapshot", "segments/" + body.snapshot],
      ["Rows", body.rows],
      ["Valid", body.valid],
      ["Rejected", body.rejected],
      ["Duplicates", body.duplicates],
      ["Blank", body.blank],
      ["Batches", body.batches],
    ].forEach(function (pair) {
      facts.appendChild(el("dt", pair[0]));
      facts.appendChild(el("dd", number(pair[1])));
    });
    holder.appendChild(facts);
    var reasons = Object.keys(body.reasons);
    if (!reasons.length) {
      return;
    }
    var table = el("table");
    table.appendChild(el("caption", "Rejected by reason"));
    var head = table.appendChild(el("thead")).appendChild(el("tr"));
    ["Reason", "Rows", "First rows"].forEach(function (title) {
      head.appendChild(el("th", title)).setAttribute("scope", "col");
    });
    var rows = table.appendChild(el("tbody"));
    reasons.forEach(function (reason) {
      var tr = rows.appendChild(el("tr"));
      tr.appendChild(el("td", reason, "mono"));
      tr.appendChild(el("td", number(body.reasons[reason]), "num"));
      var cell = tr.appendChild(el("td"));
      (body.samples[reason] || []).forEach(function (sample) {
        cell.appendChild(el("div", "row " + sample.row + " (line " + sample.line + "): " + sample.message));
      });
    });
    holder.appendChild(table);
  }

  function dryRun(button) {
    var holder = document.getElementById("dry-run-result");
    clear(holder);
    holder.appendChild(el("p", "Reading the whole snapshot…", "muted"));
    busy(button, holder, true);
    call("dry-run")
      .then(function (body) {
        clear(holder);
        showDryRun(body, holder);
      })
      .catch(function (error) {
        clear(holder);
        holder.appendChild(el("p", error.message, "error"));
      })
      .then(function () {
        busy(button, holder, false);
      });
  }

  // --- connect -----------------------------------------------------------------------------
  function connect(button) {
    var holder = document.getElementById("connect-result");
    clear(holder);
    holder.appendChild(el("p", "Testing the connection…", "muted"));
    busy(button, holder, true);
    call("connect")
      .then(function (body) {
        clear(holder);
        var list = holder.appendChild(el("ul", null, "checks"));
        body.checks.forEach(function (check) {
          var item = list.appendChild(el("li"));
          item.appendChild(el("span", check.ok ? "✓ ok" : "✗ failed", check.ok ? "mark-ok" : "mark-bad"));
          item.appendChild(document.createTextNode(" "));
          item.appendChild(el("strong", check.name));
          item.appendChild(document.createTextNode(": " + check.detail));
        });
      })
      .catch(function (error) {
        clear(holder);
        holder.appendChild(el("p", error.message, "error"));
      })
      .then(function () {
        busy(button, holder, false);
      });
  }

  // --- wiring ------------------------------------------------------------------------------
  var steps = {
    lists: loadLists,
    columns: loadColumns,
    "add-field": addRow,
    preview: function () {
      refreshPreview(0);
    },
    "dry-run": dryRun,
    connect: connect,
  };
  form.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-step]");
    if (!button || !steps[button.getAttribute("data-step")]) {
      return;
    }
    event.preventDefault();
    steps[button.getAttribute("data-step")](button);
  });
  form.elements.segment.addEventListener("change", function () {
    loadColumns(null);
  });
  var matching = ["cf_name", "cf_type", "cf_column", "other_mapping"];
  form.addEventListener("change", function (event) {
    var target = event.target;
    if (target.hasAttribute("data-field") || matching.indexOf(target.name) >= 0) {
      refreshPreview(300);
    }
  });
  form.addEventListener("input", function (event) {
    if (event.target.name === "cf_name" || event.target.name === "other_mapping") {
      refreshPreview(600);
    }
  });

  var problem = document.getElementById("form-error");
  if (problem) {
    problem.focus();
  }
})();
