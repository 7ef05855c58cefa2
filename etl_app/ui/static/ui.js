/* etl_app's pages: polling that pauses while the tab is hidden, POSTs with the CSRF token,
   Plotly charts. No inline script anywhere (the pages' Content-Security-Policy forbids it):
   each page's own file calls these. */
"use strict";

const ETL = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  /* Call fetchJson(url) every `seconds` and hand the answer to `onData`; no request while the
     tab is hidden, one at once when it shows again. Returns a function that stops it. */
  function poll(url, seconds, onData) {
    let timer = null;
    let stopped = false;
    async function tick() {
      timer = null;
      if (stopped || document.hidden) return;
      try {
        const data = await fetchJson(typeof url === "function" ? url() : url);
        onData(data);
      } catch (err) {
        console.warn("etl_app: poll failed", err);
      }
      if (!stopped && !document.hidden) timer = setTimeout(tick, seconds * 1000);
    }
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        if (timer) clearTimeout(timer);
        timer = null;
      } else if (!timer && !stopped) {
        tick();
      }
    });
    timer = setTimeout(tick, seconds * 1000);
    return () => { stopped = true; if (timer) clearTimeout(timer); };
  }

  async function fetchJson(url, options = {}) {
    const response = await fetch(url, { credentials: "same-origin", ...options,
      headers: { Accept: "application/json", ...(options.headers || {}) } });
    if (response.status === 401) { window.location.reload(); throw new Error("signed out"); }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw Object.assign(new Error(body.message || response.statusText), { status: response.status, body });
    return body;
  }

  function post(url, body) {
    return fetchJson(url, { method: "POST", body: JSON.stringify(body || {}),
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() } });
  }

  /* Draw (or redraw) a Plotly chart in `el`; the page shows the same numbers in a table. The
     legend sits above the plot, left-aligned: below it (Plotly's place for a horizontal legend)
     it overlaps the x axis's labels once they turn sideways on a narrow screen. Plotly widens
     the top margin to fit it, on as many lines as the width needs. */
  function chart(el, traces, layout = {}) {
    if (!el || typeof Plotly === "undefined") return;
    const legend = { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" };
    const base = { margin: { t: 10, r: 10, b: 40, l: 50 }, height: 260, legend,
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { size: 12 } };
    Plotly.react(el, traces, { ...base, ...layout }, { displayModeBar: false, responsive: true });
    el.dataset.drawn = "true";
  }

  /* Text into an element, never HTML. */
  function text(el, value) { if (el) el.textContent = value == null ? "" : String(value); }

  /* An ISO timestamp as "YYYY-MM-DD HH:MM:SS" UTC, as the server renders it. */
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().slice(0, 19).replace("T", " ");
  }

  function number(n) { return n == null ? "" : Number(n).toLocaleString("en"); }

  /* Forms with data-confirm ask before they are sent. */
  document.addEventListener("submit", (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  return { poll, fetchJson, post, chart, text, number, when };
})();
