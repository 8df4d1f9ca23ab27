// The grid of a DAG page: drawn from the JSON document the page carries (#ur-grid-data, made by
// webserver/ui_grid.py) and refreshed in place from grid_data.json. Cells whose state changed are
// updated; a run created after the page was served becomes a new column. Every id is put into the
// page with textContent / setAttribute, never parsed as HTML. A cell is one link whose aria-label
// (and title) says what it shows: no extra element per cell, which halves the browser's layout
// time of a 100 x 50 grid.
(function () {
  "use strict";

  var POLL_MS = 3000;       // while a run or a task instance is moving
  var IDLE_POLL_MS = 10000; // otherwise: only new runs can appear
  var MAX_FAILURES = 5;

  var holder = document.getElementById("ur-grid");
  var source = document.getElementById("ur-grid-data");
  if (!holder || !source) { return; }
  var dagUrl = holder.getAttribute("data-dag-url");
  var pollUrl = holder.getAttribute("data-grid-poll");
  var empty = document.getElementById("ur-grid-empty");
  var shown = null;   // the document currently drawn
  var links = {};     // "run\ntask" -> the cell's <a>, for in-place updates

  // A path segment quoted like the server's URLs (werkzeug keeps these characters: !$&'()*+,/:;=@).
  function segment(text) {
    return encodeURIComponent(text).replace(/%(24|26|2B|2C|2F|3A|3B|3D|40)/g, function (m) {
      return decodeURIComponent(m);
    });
  }

  function duration(seconds) {  // the server's format_duration
    if (seconds === null || seconds === undefined) { return ""; }
    seconds = Math.max(seconds, 0);
    if (seconds < 60) { return seconds < 1 ? seconds.toFixed(2) + "s" : seconds.toFixed(1) + "s"; }
    var whole = Math.round(seconds);
    var days = Math.floor(whole / 86400), hours = Math.floor(whole % 86400 / 3600);
    var minutes = Math.floor(whole % 3600 / 60), secs = whole % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    if (days) { return days + "d " + two(hours) + "h " + two(minutes) + "m"; }
    if (hours) { return hours + "h " + two(minutes) + "m " + two(secs) + "s"; }
    return minutes + "m " + two(secs) + "s";
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function runUrl(run) { return dagUrl + "/runs/" + segment(run.id); }

  function paintCell(a, data, run, task, cell) {
    var label;
    if (cell) {
      var state = data.states[cell[0]];
      a.className = "ur-cell st-" + state;
      label = [task.id, run.id, state];
      if (cell[1]) { label.push("try " + cell[1]); }
      if (cell[2] !== null && cell[2] !== undefined) { label.push(duration(cell[2])); }
      if (cell[3]) { label.push(cell[3] + " mapped"); }
    } else {
      a.className = "ur-cell ur-nocell";
      label = [task.id, run.id, "no task instance yet"];
    }
    a.title = label.join(" · ");
    a.setAttribute("aria-label", a.title);
  }

  function paintRun(a, run) {
    a.className = "ur-cell ur-run st-" + run.state;
    a.title = run.id + " · " + run.state + " · " + run.when + (run.duration ? " · " + run.duration : "");
    a.setAttribute("aria-label", a.title);
  }

  function draw(data) {
    var table = el("table", "ur-grid");
    var head = el("tr");
    var corner = el("th", "ur-task-col", "Task");
    corner.scope = "col";
    head.appendChild(corner);
    links = {};
    data.runs.forEach(function (run) {
      var th = el("th", "ur-run-head");
      th.scope = "col";
      var a = el("a");
      a.setAttribute("data-run", run.id);
      a.href = runUrl(run);
      paintRun(a, run);
      links[run.id] = a;
      th.appendChild(a);
      head.appendChild(th);
    });
    table.appendChild(el("thead")).appendChild(head);
    var body = el("tbody");
    data.tasks.forEach(function (task, row) {
      var tr = el("tr");
      var th = el("th", "ur-task-col" + (task.gone ? " ur-gone" : ""));
      th.scope = "row";
      if (task.group) { th.appendChild(el("span", "ur-group", task.group + " /")); th.appendChild(document.createTextNode(" ")); }
      th.appendChild(document.createTextNode(task.id));
      tr.appendChild(th);
      var taskPath = "/tasks/" + segment(task.id);
      data.runs.forEach(function (run, column) {
        var a = el("a");
        a.setAttribute("data-run", run.id);
        a.setAttribute("data-task", task.id);
        a.href = runUrl(run) + taskPath;
        paintCell(a, data, run, task, data.cells[column][row]);
        links[run.id + "\n" + task.id] = a;
        tr.appendChild(el("td")).appendChild(a);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);

    // Keep the keyboard focus and the scroll position across a redraw (a new column).
    var focused = document.activeElement;
    var focusKey = focused && holder.contains(focused) && focused.getAttribute("data-run") !== null
      ? [focused.getAttribute("data-run"), focused.getAttribute("data-task")] : null;
    var atRight = holder.scrollLeft + holder.clientWidth >= holder.scrollWidth - 4;
    var left = holder.scrollLeft;
    holder.replaceChildren(table);
    holder.scrollLeft = atRight ? holder.scrollWidth : left;
    if (focusKey) {
      var again = links[focusKey[1] === null ? focusKey[0] : focusKey[0] + "\n" + focusKey[1]];
      if (again) { again.focus(); }
    }
    if (empty) { empty.hidden = data.runs.length > 0; }
    shown = data;
  }

  function sameShape(a, b) {
    if (a.runs.length !== b.runs.length || a.tasks.length !== b.tasks.length) { return false; }
    for (var i = 0; i < a.runs.length; i += 1) { if (a.runs[i].id !== b.runs[i].id) { return false; } }
    for (var j = 0; j < a.tasks.length; j += 1) {
      if (a.tasks[j].id !== b.tasks[j].id || a.tasks[j].group !== b.tasks[j].group || a.tasks[j].gone !== b.tasks[j].gone) {
        return false;
      }
    }
    return true;
  }

  function update(data) {
    if (!shown || !sameShape(shown, data)) { draw(data); return; }
    data.runs.forEach(function (run, column) {
      var before = shown.runs[column];
      if (before.state !== run.state || before.duration !== run.duration) { paintRun(links[run.id], run); }
      var was = shown.cells[column], now = data.cells[column];
      data.tasks.forEach(function (task, row) {
        if (JSON.stringify(was[row]) !== JSON.stringify(now[row])) {
          paintCell(links[run.id + "\n" + task.id], data, run, task, now[row]);
        }
      });
    });
    shown = data;
  }

  var failures = 0;
  function poll() {
    if (document.hidden) { window.setTimeout(poll, POLL_MS); return; }
    fetch(pollUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (data) {
        failures = 0;
        update(data);
        window.setTimeout(poll, data.active ? POLL_MS : IDLE_POLL_MS);
      })
      .catch(function () {
        failures += 1;
        if (failures < MAX_FAILURES) { window.setTimeout(poll, POLL_MS * failures); }
      });
  }

  var first = JSON.parse(source.textContent);
  draw(first);
  window.setTimeout(poll, first.active ? POLL_MS : IDLE_POLL_MS);
}());
