/* The chat page's socket: streams answers into the page as sanitized markdown.
 *
 * Safety: model text is never assigned to innerHTML. While streaming, a tiny markdown renderer builds DOM nodes
 * with textContent (links only for http/https). When the answer is done, the server's own rendering (markdown-it +
 * nh3, with citations as footnotes) replaces it.
 */
(function () {
  "use strict";
  var root = document.getElementById("chat");
  if (!root) return;

  var messages = document.getElementById("messages");
  var form = document.getElementById("composer");
  var input = document.getElementById("composer-text");
  var sendBtn = document.getElementById("send");
  var stopBtn = document.getElementById("stop");
  var regenBtn = document.getElementById("regenerate");
  var state = document.getElementById("chat-state");
  var alertBox = document.getElementById("chat-alert");
  var messageUrl = root.getAttribute("data-message-url");
  var searchUrl = root.getAttribute("data-search-url");

  var ws = null;
  var retries = 0;
  var fatal = false;
  var current = null; // {el, body, text, citations, id, frame}
  var pendingQuestion = null; // {el, text}: the question's bubble until the server saved it

  // --- a small, safe markdown renderer (DOM only) ---------------------------------------------------------
  var SAFE_URL = /^(https?:\/\/|mailto:)/i;

  function inline(parent, text, citations, id) {
    var re = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[([^\]]+)\]\(([^)\s]+)\))|(\[(\d{1,3})\])/g;
    var last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      var node;
      if (m[1]) { node = document.createElement("code"); node.textContent = m[1].slice(1, -1); }
      else if (m[2]) { node = document.createElement("strong"); node.textContent = m[2].slice(2, -2); }
      else if (m[3]) { node = document.createElement("em"); node.textContent = m[3].slice(1, -1); }
      else if (m[4]) {
        if (SAFE_URL.test(m[6])) {
          node = document.createElement("a"); node.href = m[6]; node.rel = "noopener noreferrer nofollow";
          node.textContent = m[5];
        } else { node = document.createTextNode(m[5]); }
      } else if (m[7]) {
        var n = parseInt(m[8], 10);
        if (citations && citations.some(function (c) { return c.n === n; })) {
          node = document.createElement("sup"); node.className = "cite";
          var a = document.createElement("a"); a.className = "cite"; a.textContent = "[" + n + "]";
          a.href = "#cite-" + id + "-" + n; node.appendChild(a);
        } else { node = document.createTextNode(m[7]); }
      }
      parent.appendChild(node);
      last = re.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function renderMarkdown(text, target, citations, id) {
    var frag = document.createDocumentFragment();
    var lines = text.split("\n");
    var para = null, list = null, pre = null;
    function close() { para = null; list = null; }
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (pre) {
        if (/^\s*```/.test(line)) { pre = null; } else { pre.firstChild.textContent += line + "\n"; }
        continue;
      }
      if (/^\s*```/.test(line)) {
        close(); pre = document.createElement("pre"); pre.appendChild(document.createElement("code"));
        frag.appendChild(pre); continue;
      }
      if (!line.trim()) { close(); continue; }
      var h = /^(#{1,6})\s+(.*)$/.exec(line);
      if (h) { close(); var hn = document.createElement("h" + Math.min(h[1].length + 2, 6)); inline(hn, h[2], citations, id); frag.appendChild(hn); continue; }
      var li = /^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/.exec(line);
      if (li) {
        var kind = li[1] ? "OL" : "UL";
        if (!list || list.tagName !== kind) { para = null; list = document.createElement(kind); frag.appendChild(list); }
        var item = document.createElement("li"); inline(item, li[2], citations, id); list.appendChild(item); continue;
      }
      var q = /^>\s?(.*)$/.exec(line);
      if (q) { close(); var bq = document.createElement("blockquote"); inline(bq, q[1], citations, id); frag.appendChild(bq); continue; }
      if (!para) { list = null; para = document.createElement("p"); frag.appendChild(para); }
      else { para.appendChild(document.createElement("br")); }
      inline(para, line, citations, id);
    }
    target.replaceChildren(frag);
  }

  // --- page helpers ---------------------------------------------------------------------------------------
  function showAlert(text) {
    alertBox.textContent = text;
    alertBox.hidden = !text;
  }

  function setBusy(busy) {
    sendBtn.disabled = busy;
    regenBtn.disabled = busy;
    stopBtn.hidden = !busy;
    state.textContent = busy ? "Writing…" : "";
  }

  function scrollDown() { messages.scrollTop = messages.scrollHeight; window.scrollTo(0, document.body.scrollHeight); }

  function addUserMessage(text) {
    var el = document.createElement("article");
    el.setAttribute("data-pending", "true"); // until the server says it saved the question ("start")
    el.className = "msg msg-user";
    var body = document.createElement("div");
    body.className = "msg-body";
    body.textContent = text;
    el.appendChild(body);
    messages.appendChild(el);
    return el;
  }

  function startAnswer() {
    var el = document.createElement("article");
    el.className = "msg msg-assistant streaming";
    el.setAttribute("data-status", "streaming");
    var body = document.createElement("div");
    body.className = "msg-body md";
    body.setAttribute("data-testid", "answer");
    var dots = document.createElement("span"); dots.className = "typing"; dots.textContent = "…";
    body.appendChild(dots);
    el.appendChild(body);
    messages.appendChild(el);
    current = { el: el, body: body, text: "", citations: [], id: null, frame: 0 };
    scrollDown();
  }

  function paint() {
    if (!current) return;
    current.frame = 0;
    renderMarkdown(current.text, current.body, current.citations, current.id);
    scrollDown();
  }

  function replaceWithServerCopy(answer, id) {
    if (!id || !window.htmx) return;
    var url = messageUrl.replace("/0/", "/" + id + "/");
    window.htmx.ajax("GET", url, { target: answer.el, swap: "outerHTML" });
  }

  function refreshSidebar() {
    var list = document.getElementById("conversation-list");
    if (!list || !window.htmx) return;
    window.htmx.ajax("GET", searchUrl, { target: list, swap: "innerHTML" });
  }

  // the first question titles the conversation: once the sidebar shows the new title, the header follows
  var sidebarList = document.getElementById("conversation-list");
  if (sidebarList) sidebarList.addEventListener("htmx:afterSettle", function () {
    var active = sidebarList.querySelector("li.active a");
    var title = document.getElementById("conversation-title");
    if (!active || !title) return;
    var text = active.textContent.trim();
    if (text && title.textContent.trim() !== text) {
      title.textContent = text;
      var rename = document.querySelector("[data-testid=rename-input]");
      if (rename) rename.value = text;
      document.title = text + " · Chat";
    }
  });

  function finish(frame) {
    var answer = current;
    current = null;
    setBusy(false);
    if (!answer) return;
    if (typeof frame.text === "string") { answer.text = frame.text; }
    renderMarkdown(answer.text, answer.body, answer.citations, answer.id);
    answer.el.classList.remove("streaming");
    answer.el.setAttribute("data-status", frame.status || "error");
    replaceWithServerCopy(answer, frame.message_id || answer.id);
    refreshSidebar();
  }

  // --- the socket -----------------------------------------------------------------------------------------
  function onFrame(frame) {
    switch (frame.type) {
      case "start":
        if (current) { current.id = frame.message_id; current.el.id = "msg-" + frame.message_id; }
        if (pendingQuestion) { pendingQuestion.el.removeAttribute("data-pending"); pendingQuestion = null; }
        break;
      case "citations":
        if (current) current.citations = frame.citations || [];
        break;
      case "token":
        if (!current) startAnswer();
        current.text += frame.text;
        if (!current.frame) current.frame = window.requestAnimationFrame(paint);
        break;
      case "done":
        finish(frame);
        break;
      case "error":
        showAlert(frame.message);
        if (pendingQuestion && !frame.message_id) {
          // the question was refused before it was saved: take its bubble away and give the text back
          pendingQuestion.el.remove();
          if (pendingQuestion.text && !input.value) input.value = pendingQuestion.text;
        }
        pendingQuestion = null;
        if (current) {
          if (current.text || frame.message_id) { finish({ status: "error", message_id: frame.message_id }); }
          else { current.el.remove(); current = null; setBusy(false); }
        } else { setBusy(false); }
        break;
    }
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + root.getAttribute("data-ws-path"));
    ws.onopen = function () { retries = 0; root.setAttribute("data-socket", "open"); };
    ws.onmessage = function (e) {
      try { onFrame(JSON.parse(e.data)); } catch (err) { /* a malformed frame is ignored */ }
    };
    ws.onclose = function (e) {
      root.setAttribute("data-socket", "closed");
      if (current) { finish({ status: "stopped" }); }
      if (e.code >= 4400 && e.code < 4500) { fatal = true; setBusy(false); sendBtn.disabled = true; return; }
      if (fatal) return;
      var delay = Math.min(1000 * Math.pow(2, retries++), 15000);
      state.textContent = "Reconnecting…";
      setTimeout(connect, delay);
    };
  }

  function send(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { showAlert("Not connected yet; try again in a moment."); return false; }
    ws.send(JSON.stringify(frame));
    return true;
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || current) return;
    showAlert("");
    if (!send({ type: "send", text: text })) return;
    pendingQuestion = { el: addUserMessage(text), text: text };
    input.value = "";
    setBusy(true);
    startAnswer();
  });

  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });

  stopBtn.addEventListener("click", function () { send({ type: "stop" }); });

  regenBtn.addEventListener("click", function () {
    if (current) return;
    showAlert("");
    if (!send({ type: "regenerate" })) return;
    var answers = messages.querySelectorAll(".msg-assistant");
    var last = answers[answers.length - 1];
    var lastMsg = messages.lastElementChild;
    if (last && last === lastMsg) last.remove();
    setBusy(true);
    startAnswer();
  });

  // copy buttons (also on answers swapped in later)
  document.addEventListener("click", function (e) {
    var btn = e.target.closest ? e.target.closest("[data-copy]") : null;
    if (!btn) return;
    var source = document.querySelector(btn.getAttribute("data-copy"));
    if (!source) return;
    var text = source.innerText;
    function done() { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 1500); }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      try { document.execCommand("copy"); done(); } catch (err) { /* nothing to do */ }
      area.remove();
    }
  });

  connect();
  scrollDown();
})();
