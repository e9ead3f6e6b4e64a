// The agent run page: a socket streams the run's events (resuming after the last one it saw); each event
// refreshes the live part of the page (steps, status, usage, approval) from the server. htmx polls as a fallback.
(function () {
  "use strict";
  const live = document.getElementById("run-live");
  if (!live || !window.WebSocket) return;
  const liveUrl = live.dataset.liveUrl;
  const base = live.dataset.socket.split("?")[0];
  let after = Number(new URL(live.dataset.socket, location.href).searchParams.get("after") || 0);
  let pending = null;
  let finished = false;
  let retries = 0;

  function refresh() {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      if (window.htmx) {
        window.htmx.ajax("GET", liveUrl, { target: "#run-live", swap: "innerHTML" });
      }
    }, 150);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + base + "?after=" + after);
    socket.onmessage = function (message) {
      let frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      if (frame.type === "event" && frame.event) {
        after = Math.max(after, frame.event.seq);
        const data = frame.event.data || {};
        if (frame.event.type === "status" && ["succeeded", "failed", "cancelled"].includes(data.status)) {
          finished = true;
          live.removeAttribute("hx-trigger");
        }
        retries = 0;
        refresh();
      } else if (frame.type === "error") {
        const flash = document.getElementById("flash");
        if (flash) {
          const div = document.createElement("div");
          div.className = "flash error";
          div.textContent = frame.message;
          flash.replaceChildren(div);
        }
      }
    };
    socket.onclose = function (event) {
      if (finished || event.code === 4401 || event.code === 4403 || event.code === 4404) return;
      retries += 1;
      setTimeout(connect, Math.min(10000, 500 * 2 ** retries));
    };
  }
  connect();
})();
