// Live updates for the console: a page with data-events listens to that server-sent event
// stream. Each "update" event's values replace the text of the matching [data-live] elements,
// a chart (img[data-live-chart]) is drawn again, and a change of status reloads the page (an
// auction's close brings its result). Without this script every page works, reloaded by hand.
"use strict";
(function () {
  var live = document.querySelector("[data-events]");
  if (!live || !window.EventSource) { return; }
  var source = new EventSource(live.getAttribute("data-events"));
  var drawn = 0;
  source.addEventListener("update", function (event) {
    var data = JSON.parse(event.data);
    if (data.status !== live.getAttribute("data-status")) {
      source.close();
      window.location.reload();
      return;
    }
    Object.keys(data).forEach(function (name) {
      if (name === "status") { return; }  // shown with its badge; a change reloads instead
      document.querySelectorAll('[data-live="' + name + '"]').forEach(function (shown) {
        shown.textContent = String(data[name]);
      });
    });
    drawn += 1;
    if (drawn === 1) { return; }  // the first event is the page's own state
    document.querySelectorAll("img[data-live-chart]").forEach(function (chart) {
      chart.src = chart.getAttribute("data-live-chart") + "?v=" + drawn;
    });
  });
})();
