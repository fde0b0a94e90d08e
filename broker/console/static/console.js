// Live updates for the console: a page with data-events listens to that server-sent event
// stream. Each "update" event's values replace the text of the matching [data-live] elements,
// an open auction's bidders redraw its [data-live-rows="bidders"] table,
// a chart (img[data-live-chart]) is drawn again, and a change of status reloads the page (an
// auction's close brings its result). Without this script every page works, reloaded by hand.
"use strict";
(function () {
  var live = document.querySelector("[data-events]");
  if (!live || !window.EventSource) { return; }
  var source = new EventSource(live.getAttribute("data-events"));
  var drawn = 0;
  // An open auction's bidders, drawn again from the event (text only: nothing is parsed as HTML).
  function bidderRows(bidders) {
    var body = document.querySelector('[data-live-rows="bidders"]');
    if (!body) { return; }
    var rows = bidders.map(function (b) {
      var row = document.createElement("tr");
      var who = document.createElement("a");
      who.href = "/providers/" + encodeURIComponent(b.provider_id);
      who.textContent = b.provider;
      var rep = Number(b.score).toFixed(2) + " (" + b.ratings + " rating" + (b.ratings === 1 ? "" : "s") + ")";
      [who, rep, b.delivery].forEach(function (value) {
        var cell = document.createElement("td");
        if (typeof value === "string") { cell.textContent = value; } else { cell.appendChild(value); }
        row.appendChild(cell);
      });
      return row;
    });
    body.replaceChildren.apply(body, rows);
  }
  source.addEventListener("update", function (event) {
    var data = JSON.parse(event.data);
    if (data.status !== live.getAttribute("data-status")) {
      source.close();
      window.location.reload();
      return;
    }
    if (data.bidders) { bidderRows(data.bidders); }
    Object.keys(data).forEach(function (name) {
      if (name === "status" || name === "bidders") { return; }  // a badge; rows above
      document.querySelectorAll('[data-live="' + name + '"]').forEach(function (shown) {
        var value = data[name];
        // Counts with thousands separators, as the page draws them.
        shown.textContent = typeof value === "number" ? value.toLocaleString("en-US") : String(value);
      });
    });
    drawn += 1;
    if (drawn === 1) { return; }  // the first event is the page's own state
    document.querySelectorAll("img[data-live-chart]").forEach(function (chart) {
      chart.src = chart.getAttribute("data-live-chart") + "?v=" + drawn;
    });
  });
})();
