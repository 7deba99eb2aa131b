// The live sale pages: plain DOM and SVG, no library, no build step.
// The server sends a "history" event (recent frames) and then one frame a second over
// server-sent events; this script keeps up to ten minutes of frames and redraws.
"use strict";

const KEEP_SECONDS = 600;
const SVG = "http://www.w3.org/2000/svg";
const REFUSALS = [
  ["sold-out", "Sold out"],
  ["limit-reached", "Limit reached"],
  ["too-many-requests", "Rate limited"],
  ["sale-not-started", "Not started"],
  ["invalid", "Invalid"],
  ["other", "Other"],
];
const COLORS = { a: "#2563eb", b: "#039855", c: "#f79009", d: "#d92d20" };

function text(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value;
}

function fmt(n, digits = 0) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
}

function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// A line chart of [{name, color, points: [[t, v], ...]}] into an <svg viewBox="0 0 W H">.
function lineChart(svg, series, { compact = false } = {}) {
  const [, , W, H] = svg.getAttribute("viewBox").split(" ").map(Number);
  const left = compact ? 2 : 48, right = compact ? 2 : 8, top = compact ? 2 : 10, bottom = compact ? 2 : 22;
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return;
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1, ...all.map((p) => p[1] ?? 0));
  const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * (W - left - right);
  const y = (v) => top + (1 - v / vmax) * (H - top - bottom);
  if (!compact) {
    for (const f of [0, 0.5, 1]) {
      el("line", { x1: left, x2: W - right, y1: y(vmax * f), y2: y(vmax * f), class: "grid" }, svg);
      el("text", { x: left - 6, y: y(vmax * f) + 4, "text-anchor": "end" }, svg).textContent = fmt(vmax * f, vmax < 10 ? 1 : 0);
    }
    el("text", { x: left, y: H - 6 }, svg).textContent = new Date(t0 * 1000).toLocaleTimeString();
    el("text", { x: W - right, y: H - 6, "text-anchor": "end" }, svg).textContent = new Date(t1 * 1000).toLocaleTimeString();
  }
  let legendX = left + 8;
  for (const s of series) {
    const pts = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
    if (pts.length) {
      el("polyline", { points: pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "), class: "series", stroke: s.color }, svg);
    }
    if (!compact) {
      el("rect", { x: legendX, y: top, width: 10, height: 10, fill: s.color }, svg);
      el("text", { x: legendX + 14, y: top + 9 }, svg).textContent = s.name;
      legendX += 24 + s.name.length * 6.5;
    }
  }
}

function refusalBars(table, refusals) {
  const body = table.tBodies[0];
  body.replaceChildren();
  const max = Math.max(1, ...REFUSALS.map(([k]) => refusals[k] ?? 0));
  for (const [key, label] of REFUSALS) {
    const n = refusals[key] ?? 0;
    const row = body.insertRow();
    row.insertCell().textContent = label;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * n) / max}%`;
    row.insertCell().appendChild(bar);
    const count = row.insertCell();
    count.className = "n";
    count.id = `refusal-${key}`;
    count.textContent = fmt(n);
  }
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "–";
}

// The waiting room of a queued product: its length, its admission rate, its draw.
function showQueue(queue) {
  document.getElementById("queue").hidden = !queue;
  document.getElementById("queue-chart").hidden = !queue;
  if (!queue) return;
  text("queue-waiting", fmt(queue.waiting));
  text("queue-joined", fmt(queue.joined));
  text("queue-left", fmt(queue.left));
  text("queue-admitted-per-second", fmt(queue.admissionsPerSecond, 1));
  text("queue-admission-asked", queue.admissionPerSecond == null ? "as fast as the service sustains" : `${fmt(queue.admissionPerSecond, 1)}/s`);
  text("queue-admitted", fmt(queue.admitted));
  text("queue-ordered", fmt(queue.ordered));
  text("queue-expired", fmt(queue.expired));
  if (queue.drawn) {
    text("queue-draw", clock(queue.drawAt));
    text("queue-draw-detail", `drawn at the start${queue.soldOut ? " · sold out" : ""}`);
    text("queue-seed", queue.seed || "–");
  } else {
    text("queue-draw", "not yet");
    text("queue-draw-detail", `at ${clock(queue.drawAt)} · pre-queue ${queue.opensAt ? `open since ${clock(queue.opensAt)}` : "open"}`);
    text("queue-seed", "shown once drawn");
  }
}

function lagText(lag) {
  if (!lag || lag.events < 0) return "unknown";
  return `${fmt(lag.events)} ev · ${fmt(lag.seconds, 1)} s`;
}

function showCalls(calls, lag) {
  if (!calls || !calls.latencyMs) return;
  text("accepted-per-second", fmt(calls.acceptedPerSecond, 1));
  text("refused-per-second", fmt(calls.refusedPerSecond, 1));
  for (const p of ["p50", "p90", "p99"]) text(`latency-${p}`, fmt(calls.latencyMs[p], 1));
  text("lag", lagText(lag));
}

// One EventSource; the browser reconnects by itself (after the server's "retry").
function follow(onHistory, onFrame) {
  const status = document.getElementById("status");
  const source = new EventSource(location.pathname);
  source.addEventListener("history", (e) => onHistory(JSON.parse(e.data)));
  source.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    status.textContent = frame.error ? `database: ${frame.error}` : `live · ${new Date(frame.at * 1000).toLocaleTimeString()}`;
    status.className = frame.error ? "status down" : "status live";
    onFrame(frame);
  };
  source.onerror = () => {
    status.textContent = "reconnecting…";
    status.className = "status down";
  };
}

function salePage() {
  const frames = [];
  const keep = (frame) => {
    frames.push(frame);
    while (frames.length && frames[0].at < frame.at - KEEP_SECONDS) frames.shift();
  };
  const draw = () => {
    const last = frames[frames.length - 1];
    if (!last) return;
    const p = last.product;
    if (p) {
      text("product-name", p.name);
      text("product-id", p.productId);
      text("available", fmt(p.available));
      text("stock", fmt(p.stock));
      text("sold", fmt(p.sold));
      text("orders-per-second", fmt(p.ordersPerSecond, 1));
      for (const [status, n] of Object.entries(p.orders)) text(`orders-${status}`, fmt(n));
      showQueue(p.queue);
    } else if (!last.error) {
      text("product-name", "no such product");
    }
    showCalls(last.orderCalls, last.lag);
    if (last.orderCalls && last.orderCalls.refusals) refusalBars(document.getElementById("refusals"), last.orderCalls.refusals);
    const withProduct = frames.filter((f) => f.product);
    const series = (pick) => withProduct.map((f) => [f.at, pick(f)]);
    lineChart(document.getElementById("chart-stock"), [
      { name: "stock left", color: COLORS.a, points: series((f) => f.product.available) },
      { name: "sold", color: COLORS.b, points: series((f) => f.product.sold) },
    ]);
    lineChart(document.getElementById("chart-rate"), [
      { name: "orders/s (product)", color: COLORS.a, points: series((f) => f.product.ordersPerSecond) },
      { name: "accepted calls/s", color: COLORS.b, points: series((f) => f.orderCalls.acceptedPerSecond) },
      { name: "refused calls/s", color: COLORS.d, points: series((f) => f.orderCalls.refusedPerSecond) },
    ]);
    const queued = withProduct.filter((f) => f.product.queue);
    if (queued.length) {
      lineChart(document.getElementById("chart-queue"), [
        { name: "in the queue", color: COLORS.a, points: queued.map((f) => [f.at, f.product.queue.waiting]) },
        { name: "admitted", color: COLORS.b, points: queued.map((f) => [f.at, f.product.queue.admitted]) },
      ]);
    }
    const timed = frames.filter((f) => f.orderCalls && f.orderCalls.latencyMs);
    lineChart(document.getElementById("chart-latency"), ["p50", "p90", "p99"].map((q, i) => ({
      name: q, color: [COLORS.b, COLORS.c, COLORS.d][i], points: timed.map((f) => [f.at, f.orderCalls.latencyMs[q]]),
    })));
  };
  follow((history) => { frames.length = 0; history.forEach(keep); draw(); }, (frame) => { keep(frame); draw(); });
}

function overviewPage() {
  const seen = new Map(); // productId -> [[t, available], ...]
  let lastAt = 0;
  const show = (frame) => {
    showCalls(frame.orderCalls, frame.lag);
    const body = document.querySelector("#products tbody");
    body.replaceChildren();
    for (const p of frame.products || []) {
      const points = seen.get(p.productId) || [];
      if (frame.at > lastAt) points.push([frame.at, p.available]);
      while (points.length && points[0][0] < frame.at - KEEP_SECONDS) points.shift();
      seen.set(p.productId, points);
      const row = body.insertRow();
      row.dataset.product = p.productId;
      const link = document.createElement("a");
      link.href = `/sales/${encodeURIComponent(p.productId)}`;
      link.textContent = `${p.name} (${p.productId})`;
      row.insertCell().appendChild(link);
      for (const v of [p.stock, p.available, p.sold]) row.insertCell().textContent = fmt(v);
      row.insertCell().textContent = fmt(p.ordersPerSecond, 1);
      for (const s of ["CREATED", "PAID", "EXPIRED"]) row.insertCell().textContent = fmt(p.orders[s]);
      const svg = el("svg", { viewBox: "0 0 160 28" });
      row.insertCell().appendChild(svg);
      lineChart(svg, [{ name: "", color: COLORS.a, points }], { compact: true });
    }
    lastAt = Math.max(lastAt, frame.at);
  };
  follow((history) => history.forEach(show), show);
}

function loginPage() {
  const params = new URLSearchParams(location.search);
  const next = params.get("next");
  if (next) document.getElementById("next").value = next;
  const error = params.get("error");
  if (error) {
    const box = document.getElementById("login-error");
    box.textContent = error === "not-admin" ? "That token is not an admin's." : "That token is not valid (expired, or not ours).";
    box.hidden = false;
  }
}

({ sale: salePage, overview: overviewPage, login: loginPage })[document.body.dataset.page]();
