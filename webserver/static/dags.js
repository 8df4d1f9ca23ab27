// The DAG list refreshes its run dots, last run and next run in place.
// The page is complete without this script; it only keeps the rows current.
(function () {
  "use strict";

  var POLL_MS = 5000;
  var table = document.querySelector("table.dag-list[data-status-url]");
  if (!table || !window.fetch) {
    return;
  }
  var statusUrl = table.getAttribute("data-status-url");
  var rows = {};
  var ids = [];
  Array.prototype.forEach.call(table.querySelectorAll("tr[data-dag-id]"), function (row) {
    var id = row.getAttribute("data-dag-id");
    rows[id] = row;
    ids.push(id);
  });
  if (!ids.length) {
    return;
  }

  function stateSpan(state) {
    var span = document.createElement("span");
    span.className = "state-label state-" + state;
    span.textContent = state;
    return span;
  }

  function renderDots(list, runs) {
    var items = runs.map(function (run) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.className = "dot state-" + run.state;
      a.href = run.url;
      a.title = run.state + ": " + run.run_id;
      var hidden = document.createElement("span");
      hidden.className = "visually-hidden";
      hidden.textContent = run.state + ": " + run.run_id;
      a.appendChild(hidden);
      li.appendChild(a);
      return li;
    });
    list.replaceChildren.apply(list, items);
  }

  function renderLastRun(cell, run) {
    if (!run) {
      cell.replaceChildren();
      return;
    }
    var link = document.createElement("a");
    link.href = run.url;
    link.appendChild(stateSpan(run.state));
    var when = document.createElement("time");
    when.className = "muted";
    when.textContent = run.when;
    cell.replaceChildren(link, document.createTextNode(" "), when);
  }

  function renderNextRun(cell, status) {
    if (!status.next_dagrun) {
      cell.replaceChildren();
      return;
    }
    var when = document.createElement("time");
    when.setAttribute("datetime", status.next_dagrun);
    when.textContent = status.next_run;
    cell.replaceChildren(when);
  }

  function apply(body) {
    var dags = (body && body.dags) || {};
    Object.keys(dags).forEach(function (id) {
      var row = rows[id];
      if (!row) {
        return;
      }
      var status = dags[id];
      var dots = row.querySelector("[data-dots]");
      var last = row.querySelector("[data-last-run]");
      var next = row.querySelector("[data-next-run]");
      if (dots) {
        renderDots(dots, status.recent_runs || []);
      }
      if (last) {
        renderLastRun(last, status.last_run);
      }
      if (next) {
        renderNextRun(next, status);
      }
    });
  }

  var timer = null;
  var inFlight = false;
  var failures = 0;

  function schedule() {
    // Back off after failures (at most a minute apart); a hidden tab does not poll.
    var delay = Math.min(POLL_MS * Math.pow(2, failures), 60000);
    timer = window.setTimeout(poll, delay);
  }

  function poll() {
    timer = null;
    if (document.hidden || inFlight) {
      return;
    }
    inFlight = true;
    var url = statusUrl + "?ids=" + encodeURIComponent(ids.join(","));
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, redirect: "error" })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || type.indexOf("application/json") === -1) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (body) {
        failures = 0;
        apply(body);
      })
      .catch(function () {
        failures = Math.min(failures + 1, 4);
      })
      .then(function () {
        inFlight = false;
        if (!document.hidden) {
          schedule();
        }
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null && !inFlight) {
      poll();
    }
  });
  schedule();
})();
