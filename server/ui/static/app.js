// Nectar UI: the few things a server-rendered page cannot do by itself. No inline handlers
// (the CSP forbids them); everything hangs off data- attributes.
"use strict";

// htmx sends the CSRF token with every request it makes.
document.addEventListener("htmx:configRequest", (e) => {
  e.detail.headers["X-CSRF-Token"] = document.body.dataset.csrf;
});

// Copy buttons: data-copy holds the text.
document.addEventListener("click", (e) => {
  const b = e.target.closest("button.copy");
  if (!b) return;
  navigator.clipboard.writeText(b.dataset.copy).then(() => {
    const was = b.textContent;
    b.textContent = "Copied";
    setTimeout(() => { b.textContent = was; }, 1200);
  }, () => { window.prompt("Copy this:", b.dataset.copy); });
});

// A running task's log is tailed from its signed log URL: each poll asks from the offset the
// last answer gave, and appends as text (never as HTML), until the server says it is complete.
function tailLog(pre) {
  const url = pre.dataset.logUrl;
  let offset = 0;
  const step = () => {
    fetch(url + "&offset=" + offset).then((r) => {
      if (!r.ok) throw new Error("log: " + r.status);
      offset = Number(r.headers.get("X-Next-Offset") || offset);
      const complete = r.headers.get("X-Log-Complete") === "true";
      return r.text().then((t) => {
        if (t) {
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append(document.createTextNode(t));
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        }
        if (!complete) setTimeout(step, 1000);
      });
    }).catch(() => setTimeout(step, 3000));
  };
  pre.textContent = "";
  step();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("pre[data-log-url]").forEach(tailLog);
});
