// Live updates for the console: a page with data-events listens to that server-sent event
// stream; numbers change in place, and a change of status reloads the page (the close of an
// auction brings its result). Without this script the pages work as they are, reloaded by hand.
"use strict";
(function () {
  var live = document.querySelector("[data-events]");
  if (!live || !window.EventSource) { return; }
  var source = new EventSource(live.getAttribute("data-events"));
  source.addEventListener("auction", function (event) {
    var data = JSON.parse(event.data);
    Object.keys(data).forEach(function (name) {
      var shown = live.querySelector('[data-live="' + name + '"]');
      if (shown && name !== "status") { shown.textContent = String(data[name]); }
    });
    if (data.status !== live.getAttribute("data-status")) {
      source.close();
      window.location.reload();
    }
  });
})();
