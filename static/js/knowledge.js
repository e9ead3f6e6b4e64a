// Knowledge base page: drag-and-drop multi-file upload through the htmx form, with an upload progress bar.
(function () {
  function setup() {
    var form = document.getElementById("upload-form");
    var zone = document.getElementById("dropzone");
    var input = document.getElementById("upload-files");
    var bar = document.getElementById("upload-progress");
    if (!form || !zone || !input) return;
    function send() { if (input.files && input.files.length) htmx.trigger(form, "submit"); }
    input.addEventListener("change", send);
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      if (!e.dataTransfer || !e.dataTransfer.files.length) return;
      input.files = e.dataTransfer.files;
      send();
    });
    zone.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
    form.addEventListener("htmx:xhr:progress", function (e) {
      if (!bar || !e.detail.lengthComputable) return;
      bar.hidden = false;
      bar.value = Math.round((e.detail.loaded / e.detail.total) * 100);
    });
    form.addEventListener("htmx:afterRequest", function () {
      if (bar) { bar.hidden = true; bar.value = 0; }
      input.value = "";
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup); else setup();
})();
