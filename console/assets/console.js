// nurtured console: hands the CSRF token to htmx requests and asks before
// irreversible buttons (data-confirm). Every page works without this script.
document.addEventListener("htmx:configRequest", function (e) {
  var token = document.body.getAttribute("data-csrf");
  if (token) { e.detail.headers["X-CSRF-Token"] = token; }
});
document.addEventListener("submit", function (e) {
  var ask = e.submitter && e.submitter.getAttribute("data-confirm");
  if (ask && !window.confirm(ask)) { e.preventDefault(); }
});
