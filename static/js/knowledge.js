// Knowledge base page: drag-and-drop multi-file upload with a progress bar.
// Each file goes in its own request (the server refuses a request over the department's per-file limit before
// reading it); a file over the limit is refused here at once, without sending it. The documents list that comes
// back is swapped in by htmx (its out-of-band notice too), and refreshes itself while documents are indexed.
(function () {
  function setup() {
    var form = document.getElementById("upload-form");
    var zone = document.getElementById("dropzone");
    var input = document.getElementById("upload-files");
    var bar = document.getElementById("upload-progress");
    var refusedBox = document.getElementById("upload-refused");
    if (!form || !zone || !input) return;
    var url = form.getAttribute("data-upload-url");
    var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
    var maxMb = form.getAttribute("data-max-mb");

    function csrfToken() {
      try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
      catch (err) { return ""; }
    }

    function refuse(text) {
      if (!refusedBox) return;
      var p = document.createElement("p");
      p.className = "flash error";
      p.textContent = text;
      refusedBox.appendChild(p);
    }

    function textOf(html) {
      var doc = new DOMParser().parseFromString(html || "", "text/html");
      return (doc.body.textContent || "").replace(/\s+/g, " ").trim();
    }

    function uploadOne(file, done) {
      var data = new FormData();
      data.append("files", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("HX-Request", "true");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.upload.onprogress = function (e) {
        if (!bar || !e.lengthComputable) return;
        bar.hidden = false;
        bar.value = Math.round((e.loaded / e.total) * 100);
      };
      xhr.onload = function () {
        if (xhr.status === 200) {
          window.htmx.swap("#documents", xhr.responseText, { swapStyle: "outerHTML" });
        } else {
          refuse(file.name + ": " + (textOf(xhr.responseText) || "the upload was refused (" + xhr.status + ")."));
        }
        done();
      };
      xhr.onerror = function () {
        refuse(file.name + ": the upload did not reach the server; check the connection and try again.");
        done();
      };
      xhr.send(data);
    }

    function send(fileList) {
      var files = Array.prototype.slice.call(fileList || []);
      input.value = "";
      if (!files.length) return;
      if (refusedBox) refusedBox.replaceChildren();
      var queue = files.filter(function (file) {
        if (maxBytes && file.size > maxBytes) {
          refuse(file.name + " is " + (file.size / 1048576).toFixed(1) + " MB; your department's limit is " +
                 maxMb + " MB per file.");
          return false;
        }
        return true;
      });
      (function next() {
        var file = queue.shift();
        if (!file) { if (bar) { bar.hidden = true; bar.value = 0; } return; }
        if (bar) bar.value = 0;
        uploadOne(file, next);
      })();
    }

    input.addEventListener("change", function () { send(input.files); });
    form.addEventListener("submit", function (e) { e.preventDefault(); send(input.files); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) send(e.dataTransfer.files);
    });
    zone.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup); else setup();
})();
