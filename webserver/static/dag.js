// Live parts of the run and task instance pages: state refresh in place, log tailing, and run
// pickers that apply on change. Without JavaScript these pages are complete as served. The grid
// has its own script (grid.js).
(function () {
  "use strict";

  var STATE_PREFIX = "st-";
  var POLL_MS = 3000;
  var LOG_MS = 2000;

  function setState(el, state) {
    var drop = [];
    el.classList.forEach(function (c) { if (c.indexOf(STATE_PREFIX) === 0) { drop.push(c); } });
    drop.forEach(function (c) { el.classList.remove(c); });
    el.classList.remove("ur-nocell");  // a task instance created since the page was served
    el.classList.add(STATE_PREFIX + state);
  }

  function apply(el, info) {
    if (!info) { return; }
    var show = el.getAttribute("data-show");
    if (!show || show === "state") { setState(el, info.state); }
    if (show && info[show] !== undefined && info[show] !== null) { el.textContent = String(info[show]); }
  }

  // --- state refresh -------------------------------------------------------------------------
  var root = document.querySelector("[data-poll]");
  if (root) {
    var pollUrl = root.getAttribute("data-poll");
    var failures = 0;

    var refresh = function () {
      if (document.hidden) { window.setTimeout(refresh, POLL_MS); return; }
      fetch(pollUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          failures = 0;
          root.querySelectorAll("[data-run]").forEach(function (el) {
            var run = el.getAttribute("data-run");
            var task = el.getAttribute("data-task");
            if (task === null) { apply(el, data.runs[run]); }
            else if (data.tis[run]) { apply(el, data.tis[run][task]); }
          });
          if (data.active) { window.setTimeout(refresh, POLL_MS); }
        })
        .catch(function () {
          failures += 1;
          if (failures < 5) { window.setTimeout(refresh, POLL_MS * failures); }
        });
    };
    window.setTimeout(refresh, POLL_MS);
  }

  // --- log tail ----------------------------------------------------------------------------
  var log = document.getElementById("ur-log");
  if (log && log.getAttribute("data-live")) {
    var offset = parseInt(log.getAttribute("data-offset") || "0", 10);
    var status = document.getElementById("ur-log-status");
    var tail = function () {
      var url = log.getAttribute("data-log-url") + "&offset=" + encodeURIComponent(String(offset));
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          if (data.text) {
            var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
            log.appendChild(document.createTextNode(data.text));
            if (atBottom) { log.scrollTop = log.scrollHeight; }
          }
          offset = data.offset;
          if (data.live || data.text) { window.setTimeout(tail, LOG_MS); }
          else if (status) { status.textContent = "The try has ended (" + data.state + ")."; }
        })
        .catch(function () { if (status) { status.textContent = "Stopped following the log: the server did not answer."; } });
    };
    window.setTimeout(tail, LOG_MS);
  }

  // --- pickers -----------------------------------------------------------------------------
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { if (select.form) { select.form.submit(); } });
  });
}());
