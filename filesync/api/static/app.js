// filesync's status page: reads the daemon's JSON API every few seconds and draws it. Plain JavaScript, no
// build step, nothing fetched from elsewhere. Data is only ever written with textContent (never innerHTML),
// and a link is made only from an http(s) URL.
"use strict";

const REFRESH_MS = 5000;
const PAGE = 50;
const TOKEN_KEY = "filesync.token";
const STATES = ["pending", "in_progress", "waiting", "failed", "skipped", "done"];
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const state = {
  failuresShown: PAGE,
  copiedShown: PAGE,
  pending: null, // an action waiting for the token form
  drawn: {}, // JSON last drawn per part: nothing is redrawn (focus kept) when nothing changed
  timer: null,
  seq: 0, // the latest refresh: an older one that answers late draws nothing
  chartRuns: [],
};

// --- talking to the API -----------------------------------------------------------------------------------
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const saved = token();
  if (saved) headers.Authorization = "Bearer " + saved;
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
    credentials: "omit",
  });
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    throw new HttpError(response.status, (data && data.error) || response.statusText);
  }
  return data;
}

function askToken(why, action) {
  state.pending = action;
  $("access-why").textContent = why;
  $("access").hidden = false;
  $("token").value = "";
  $("token").focus();
}

function hideToken() {
  $("access").hidden = true;
  state.pending = null;
}

// A change (retry, run now): asks for the token first when none is kept, and again when it is refused.
async function change(path, body, say) {
  const attempt = async () => {
    try {
      const data = await api(path, { method: "POST", body });
      hideToken();
      return data;
    } catch (e) {
      if (e.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        askToken("The token was refused; enter the daemon's FILESYNC_HTTP_TOKEN.", attempt);
      } else {
        say(e.status === 403 ? "Disabled: " + e.message : "Failed: " + e.message);
      }
      return null;
    }
  };
  if (!token()) {
    askToken("Changes need the daemon's token (FILESYNC_HTTP_TOKEN).", attempt);
    return null;
  }
  return attempt();
}

// --- formatting ------------------------------------------------------------------------------------------
function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "unknown";
  seconds = Math.round(seconds);
  if (seconds < 60) return seconds + " s";
  const m = Math.floor(seconds / 60);
  if (m < 60) return m + " min " + (seconds % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function link(url, text) {
  if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return el("span", text);
  return el("a", text, { href: url, rel: "noopener noreferrer", target: "_blank" });
}

// Draw only when the data changed: keeps focus and scroll on a page that refreshes itself.
function changed(part, data) {
  const json = JSON.stringify(data);
  if (state.drawn[part] === json) return false;
  state.drawn[part] = json;
  return true;
}

// --- the parts of the page -------------------------------------------------------------------------------
function drawStatus(status) {
  if (!changed("status", status)) return;
  const files = status.files || {};
  const backlog = (files.pending || 0) + (files.in_progress || 0) + (files.waiting || 0);
  for (const dd of document.querySelectorAll("#counts dd")) {
    const name = dd.dataset.count;
    dd.textContent = String(name === "backlog" ? backlog : files[name] || 0);
  }
  const body = $("destinations").tBodies[0];
  body.replaceChildren();
  for (const [sink, counts] of Object.entries(status.destinations || {}).sort()) {
    const row = el("tr", null, { "data-sink": sink });
    row.append(el("th", sink === "-" ? "no destination yet" : sink, { scope: "row" }));
    for (const name of STATES) row.append(el("td", counts[name] || 0, { "data-state": name }));
    body.append(row);
  }
}

function drawHealth(health, error) {
  const p = $("health");
  if (error) {
    p.textContent = "Daemon: " + error;
    return;
  }
  const next = health.next_run ? " · next scheduled run " + when(health.next_run) : "";
  p.textContent = "Daemon: " + (health.status === "ok" ? "healthy" : "unhealthy — " + health.reason) + next;
}

function drawRun(runs) {
  const current = runs.find((r) => r.status === "running");
  const live = current && current.progress;
  $("run-live").hidden = !live;
  $("run-idle").hidden = Boolean(live);
  $("run-now").disabled = Boolean(current);
  if (live) {
    const bar = $("run-progress");
    bar.max = Math.max(live.files_total, 1);
    bar.value = Math.min(live.files_done, bar.max);
    bar.textContent = Math.round((100 * bar.value) / bar.max) + " %";
    $("run-label").textContent = "Run " + current.id + ", started " + when(current.started_at);
    const total = live.bytes_total === null ? "" : " of " + (live.bytes_total_estimated ? "~" : "") + bytes(live.bytes_total);
    $("run-text").textContent =
      live.files_done + " of " + live.files_total + " files · " + bytes(live.bytes_done) + total + " · " +
      live.files_per_second.toFixed(2) + " files/s · " + bytes(live.bytes_per_second) + "/s · " +
      (live.eta_seconds === null ? "time left unknown" : "about " + duration(live.eta_seconds) + " left");
  } else if (current) {
    $("run-idle").textContent = "Run " + current.id + " is going on " + current.worker + " (started " +
      when(current.started_at) + "); its progress shows on that worker's page.";
  } else {
    const last = runs[0];
    $("run-idle").textContent = last
      ? "No run is going. Last run " + last.id + " " + last.status + " at " + when(last.finished_at) + ": " +
        last.copied + " copied, " + last.failed + " failed."
      : "No run is going, and none has run yet.";
  }
}

function drawChart(runs, force = false) {
  const shown = runs.filter((r) => r.status !== "running").slice(0, 20).reverse();
  state.chartRuns = runs;
  if (!changed("chart", shown) && !force) return;
  const svg = $("chart");
  svg.replaceChildren();
  // One unit per screen pixel, so labels keep their size at any width.
  const width = Math.max(svg.clientWidth, 200);
  const height = Math.max(svg.clientHeight, 120);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  const top = Math.max(1, ...shown.map((r) => r.copied));
  const slot = width / Math.max(shown.length, 10);
  const room = height - 34; // a line for the run ids below, one for the counts above
  shown.forEach((run, i) => {
    const h = Math.round((room * run.copied) / top);
    const x = i * slot + slot * 0.15;
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("x", String(x));
    bar.setAttribute("y", String(height - 16 - h));
    bar.setAttribute("width", String(slot * 0.7));
    bar.setAttribute("height", String(Math.max(h, 1)));
    bar.setAttribute("class", run.failed ? "bar bar-failed" : "bar");
    bar.dataset.run = String(run.id);
    bar.dataset.copied = String(run.copied);
    const title = document.createElementNS(SVG, "title");
    title.textContent = "Run " + run.id + ": " + run.copied + " copied, " + run.failed + " failed (" + run.status + ")";
    bar.append(title);
    const count = document.createElementNS(SVG, "text");
    count.setAttribute("x", String(i * slot + slot / 2));
    count.setAttribute("y", String(height - 20 - h));
    count.setAttribute("text-anchor", "middle");
    count.textContent = String(run.copied);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", String(i * slot + slot / 2));
    label.setAttribute("y", String(height - 3));
    label.setAttribute("text-anchor", "middle");
    label.setAttribute("class", "run-id");
    label.textContent = "#" + run.id;
    svg.append(bar, count, label);
  });
  const total = shown.reduce((sum, r) => sum + r.copied, 0);
  $("chart-caption").textContent = shown.length
    ? "Files copied by each of the last " + shown.length + " runs, oldest first (" + total +
      " in all). Orange bars: runs where some files failed."
    : "No runs yet.";
}

function failureRows(file) {
  const failed = (file.transfers || []).filter((t) => t.state === "failed");
  if (failed.length) return failed.map((t) => [t.sink, t.error || t.error_class || "", t.attempts]);
  return [["—", file.error || file.error_class || "", file.attempts]];
}

function drawFailures(page) {
  if (!changed("failures", page)) return;
  const body = $("failures").tBodies[0];
  body.replaceChildren();
  for (const file of page.files) {
    for (const [sink, reason, attempts] of failureRows(file)) {
      const row = el("tr", null, { "data-file": file.file_id });
      const path = el("td", null, { class: "path" });
      path.append(el("span", file.path || file.file_id));
      row.append(path, el("td", sink), el("td", reason, { class: "reason" }), el("td", attempts));
      const cell = el("td");
      const button = el("button", "Retry", { type: "button", class: "retry", "aria-label": "Retry " + (file.path || file.file_id) });
      button.addEventListener("click", () => retry({ file_ids: [file.file_id] }, file.path || file.file_id));
      cell.append(button);
      row.append(cell);
      body.append(row);
    }
  }
  if (!page.files.length) {
    const row = el("tr");
    row.append(el("td", $("failures-q").value.trim() ? "No failure matches." : "No failures.", { colspan: "5" }));
    body.append(row);
  }
  $("failures-more").hidden = !page.next_cursor;
  $("retry-all").disabled = !page.files.length;
}

function drawCopied(page) {
  if (!changed("copied", page)) return;
  const body = $("copied").tBodies[0];
  body.replaceChildren();
  for (const file of page.files) {
    const row = el("tr", null, { "data-file": file.file_id });
    row.append(el("td", file.path || file.file_id, { class: "path" }));
    const cell = el("td");
    const list = el("ul", null, { class: "copies" });
    for (const t of (file.transfers || []).filter((t) => t.state === "done")) {
      const item = el("li");
      item.append(link(t.url, t.sink));
      if (!t.url) item.append(document.createTextNode(" (" + (t.remote_id || "no URL") + ")"));
      list.append(item);
    }
    cell.append(list);
    row.append(cell);
    body.append(row);
  }
  if (!page.files.length) {
    const row = el("tr");
    row.append(el("td", "No copied file" + ($("copied-q").value.trim() ? " matches." : " yet."), { colspan: "2" }));
    body.append(row);
  }
  $("copied-more").hidden = !page.next_cursor;
}

// --- actions ---------------------------------------------------------------------------------------------
async function retry(body, what) {
  const say = (text) => ($("failures-message").textContent = text);
  const data = await change("/api/retry", body, say);
  if (data) {
    say(what + ": " + data.queued + " file(s) queued again.");
    refresh();
  }
}

async function runNow() {
  const say = (text) => ($("run-message").textContent = text);
  const data = await change("/api/run", {}, say);
  if (data) {
    say("A run was started.");
    refresh();
  }
}

// --- the refresh loop ------------------------------------------------------------------------------------
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return q.toString();
}

async function refresh() {
  const mine = ++state.seq;
  clearTimeout(state.timer);
  try {
    const [status, runs, failures, copied] = await Promise.all([
      api("/api/status"),
      api("/api/runs?limit=20"),
      api("/api/files?" + query({ state: "failed", q: $("failures-q").value.trim(), limit: state.failuresShown })),
      api("/api/files?" + query({ state: "done", q: $("copied-q").value.trim(), limit: state.copiedShown })),
    ]);
    if (mine !== state.seq) return;
    drawStatus(status);
    drawRun(runs.runs);
    drawChart(runs.runs);
    drawFailures(failures);
    drawCopied(copied);
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + "; refreshes every " + REFRESH_MS / 1000 + " s.";
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      if ($("access").hidden) askToken("This daemon's API needs its token (FILESYNC_HTTP_TOKEN) to be read.", refresh);
    }
    $("updated").textContent = "Could not read the API: " + e.message;
  }
  try {
    drawHealth(await api("/healthz"));
  } catch (e) {
    drawHealth(null, e.message);
  }
  if (mine === state.seq) state.timer = setTimeout(refresh, REFRESH_MS);
}

function debounce(fn, ms) {
  let t = null;
  return () => {
    clearTimeout(t);
    t = setTimeout(fn, ms);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    const action = state.pending || refresh;
    hideToken();
    action();
  });
  $("token-cancel").addEventListener("click", hideToken);
  for (const id of ["failures-search", "copied-search"]) {
    $(id).addEventListener("submit", (event) => {
      event.preventDefault();
      refresh();
    });
  }
  $("failures-q").addEventListener("input", debounce(() => {
    state.failuresShown = PAGE;
    refresh();
  }, 300));
  $("copied-q").addEventListener("input", debounce(() => {
    state.copiedShown = PAGE;
    refresh();
  }, 300));
  $("failures-more").addEventListener("click", () => {
    state.failuresShown = Math.min(state.failuresShown + PAGE, 500);
    refresh();
  });
  $("copied-more").addEventListener("click", () => {
    state.copiedShown = Math.min(state.copiedShown + PAGE, 500);
    refresh();
  });
  $("retry-all").addEventListener("click", () => retry({ failed: true }, "All failed files"));
  $("run-now").addEventListener("click", runNow);
  window.addEventListener("resize", debounce(() => drawChart(state.chartRuns, true), 200));
  refresh();
});
