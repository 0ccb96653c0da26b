// Live events: listen to the workspace's server-sent events and put new rows on top.
(function () {
  "use strict";
  var body = document.getElementById("live-events");
  var status = document.getElementById("live-status");
  if (!body || !window.EventSource) { return; }
  var MAX_ROWS = 200;
  var seen = {};
  var source = new EventSource(body.getAttribute("data-stream"));

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  source.addEventListener("open", function () { status.textContent = "(live)"; });
  source.addEventListener("error", function () { status.textContent = "(reconnecting…)"; });
  source.addEventListener("event", function (message) {
    var e = JSON.parse(message.data);
    if (seen[e.messageId]) { return; }
    seen[e.messageId] = true;
    var empty = body.querySelector("tr.empty");
    if (empty) { empty.remove(); }
    var row = document.createElement("tr");
    row.setAttribute("data-message-id", e.messageId);
    [e.timestamp, e.type, e.event, e.userId, e.anonymousId].forEach(function (v) {
      row.appendChild(cell(v));
    });
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > MAX_ROWS) { body.deleteRow(body.rows.length - 1); }
  });
}());
