// Cove web interface: progressive enhancement only; every page works without it.
(function () {
  "use strict";
  // Copy buttons: <button data-copy="ID"> copies the text of element ID.
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.classList.remove("hidden");
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (!el) { return; }
      var text = el.textContent;
      var done = function () {
        var old = b.textContent;
        b.textContent = "Copied";
        setTimeout(function () { b.textContent = old; }, 1200);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { select(el); });
      } else {
        select(el);
        try { document.execCommand("copy"); done(); } catch (e) { /* text stays selected */ }
      }
    });
  });
  function select(el) {
    var r = document.createRange();
    r.selectNodeContents(el);
    var s = window.getSelection();
    s.removeAllRanges();
    s.addRange(r);
  }
  // Filter box: narrows the rows shown as you type (the form still submits
  // to the server, which filters every page, without JavaScript).
  var input = document.querySelector("input[data-filter]");
  if (input) {
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      document.querySelectorAll("[data-name]").forEach(function (row) {
        var hit = row.getAttribute("data-name").toLowerCase().indexOf(q) !== -1;
        row.classList.toggle("hidden", !hit);
      });
    });
  }
})();
