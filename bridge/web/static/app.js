// drbridge dashboard: polls the JSON API and redraws; no libraries, no network beyond the bridge.
"use strict";

const REFRESH_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
let loggedIn = false;

const $ = (id) => document.getElementById(id);
const kw = (w) => (w === null || w === undefined ? "–" : (w / 1000).toFixed(1) + " kW");
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");
const stamp = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function send(method, path, body) {
  return api(path, {
    method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
}

function say(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

// site ---------------------------------------------------------------------------------------
function renderSite(site) {
  $("load").textContent = kw(site.load_w);
  $("limit").textContent = kw(site.limit_w);
  $("limit-reason").textContent = site.limit_reason;
  $("connected").textContent = `${site.stations_connected} / ${site.stations_known}`;
  $("sessions").textContent = site.sessions;
  const phases = Object.entries(site.voltage.phases);
  $("voltage").textContent = phases.length
    ? phases.map(([p, v]) => `${p} ${v.min_v.toFixed(0)} / ${v.mean_v.toFixed(0)} V`).join(" · ")
    : "–";
  const banner = $("banner");
  banner.hidden = !site.dr_banner.active;
  banner.textContent = site.dr_banner.text || "";
  const vtn = $("vtn");
  vtn.className = "pill " + site.vtn.state.replace(" ", "-");
  vtn.textContent = `${site.vtn.protocol} VTN ${site.vtn.state}` +
    (site.vtn.last_contact ? `, last contact ${time(site.vtn.last_contact)}` : "");
  vtn.title = site.vtn.url + (site.vtn.ven_id ? ` (VEN id ${site.vtn.ven_id})` : "");
  const programs = $("programs");
  programs.hidden = site.vtn.programs.length === 0;
  programs.textContent = `programs: ${site.vtn.programs.join(", ")}`;
  const upstream = $("upstream");
  upstream.hidden = !site.upstream;
  if (site.upstream) {
    const links = site.upstream.links;
    const down = (links.down || 0) + (links.connecting || 0);
    upstream.className = "pill " + (down ? "unreachable" : "online");
    upstream.textContent = `CSMS ${links.up || 0} up` + (links.replaying ? `, ${links.replaying} replaying` : "") +
      (down ? `, ${down} down` : "") + (site.upstream.queue ? `, ${site.upstream.queue} queued` : "");
    upstream.title = `${site.upstream.url} (offline authorization: ${site.upstream.offline_authorization})`;
  }
}

// chart: load as a line, limit as steps, both against time -------------------------------------
function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function renderChart(series, nowIso) {
  const chart = $("chart");
  const width = 900, height = 260, left = 50, right = 10, top = 10, bottom = 24;
  const points = series.points.map((p) => ({
    t: new Date(p.at).getTime(), load: p.load_w, limit: p.limit_w,
  }));
  // a bridge that started recently fills the width with what it has
  const t1 = new Date(nowIso).getTime();
  const t0 = Math.max(new Date(series.since).getTime(), points.length ? points[0].t : 0);
  const top_w = Math.max(series.capacity_w || 0,
    ...points.map((p) => Math.max(p.load || 0, p.limit || 0))) * 1.05 || 1;
  const x = (t) => left + ((t - t0) / Math.max(t1 - t0, 1)) * (width - left - right);
  const y = (w) => top + (1 - w / top_w) * (height - top - bottom);
  chart.replaceChildren();
  for (let i = 0; i <= 4; i++) {
    const w = (top_w / 1.05) * i / 4;
    chart.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(w), y2: y(w) }));
    const label = svg("text", { x: 4, y: y(w) + 4 });
    label.textContent = (w / 1000).toFixed(0) + " kW";
    chart.append(label);
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    const label = svg("text", { x: x(t), y: height - 6, "text-anchor": anchor });
    const short = t1 - t0 < 15 * 60 * 1000;
    label.textContent = new Date(t).toLocaleTimeString([], short
      ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" });
    chart.append(label);
  }
  const loadPts = points.filter((p) => p.load !== null).map((p) => `${x(p.t).toFixed(1)},${y(p.load).toFixed(1)}`);
  const limitPts = [];
  let previous = null;
  for (const p of points) {
    if (p.limit === null) continue;
    if (previous !== null && previous !== p.limit) limitPts.push(`${x(p.t).toFixed(1)},${y(previous).toFixed(1)}`);
    limitPts.push(`${x(p.t).toFixed(1)},${y(p.limit).toFixed(1)}`);
    previous = p.limit;
  }
  chart.append(svg("polyline", { class: "limit", points: limitPts.join(" ") }));
  chart.append(svg("polyline", { class: "load", points: loadPts.join(" ") }));
  const limits = points.map((p) => p.limit).filter((v) => v !== null);
  chart.dataset.points = String(points.length);
  chart.dataset.minLimitW = limits.length ? String(Math.min(...limits)) : "";
  chart.dataset.maxLimitW = limits.length ? String(Math.max(...limits)) : "";
}

// events ---------------------------------------------------------------------------------------
function signalText(signal) {
  const values = signal.intervals.map((i) => i.value).join(", ");
  return `${signal.name} ${signal.type} [${values}]`;
}

async function optOut(eventId) {
  const reason = window.prompt(`Opt the site out of ${eventId}? Reason:`, "operator decision");
  if (reason === null) return;
  try {
    await send("POST", `/api/events/${encodeURIComponent(eventId)}/opt-out`, { reason });
    say(`Opted out of ${eventId}.`);
  } catch (error) { say(`Opt-out failed: ${error.message}`); }
  refresh();
}

async function withdraw(eventId) {
  try {
    await send("DELETE", `/api/events/${encodeURIComponent(eventId)}/opt-out`);
    say(`Opt-out of ${eventId} withdrawn.`);
  } catch (error) { say(`Withdrawal failed: ${error.message}`); }
  refresh();
}

function renderEvents(events) {
  const body = $("events").tBodies[0];
  const rows = [...events.active, ...events.upcoming, ...events.history].map((e) => {
    const canOpt = loggedIn && e.opt === "optIn" && (e.state === "active" || e.state === "upcoming");
    return el("tr", { "data-event": e.event_id, class: `event-${e.state}` },
      el("td", {}, e.event_id),
      el("td", {}, e.state),
      el("td", {}, `${stamp(e.start)} – ${e.end ? time(e.end) : "open"}`),
      el("td", {}, e.signals.map(signalText).join("; ")),
      el("td", { class: `opt opt-${e.opt}`, title: e.opt_reason }, e.opt),
      el("td", { class: "num" }, kw(e.cap_w)),
      el("td", { class: "num", title: e.baseline_method || "" }, kw(e.baseline_w)),
      el("td", { class: "num" }, kw(e.measured_w)),
      el("td", { class: "num" }, kw(e.shed_w)),
      el("td", { class: "actions" }, canOpt
        ? el("button", { type: "button", class: "opt-out", onclick: () => optOut(e.event_id) }, "Opt out")
        : (loggedIn && e.operator_opt && (e.state === "active" || e.state === "upcoming")
          ? el("button", { type: "button", class: "withdraw", onclick: () => withdraw(e.event_id) }, "Withdraw opt-out")
          : null)));
  });
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 10, class: "muted" }, "no events"))]));
}

// stations -------------------------------------------------------------------------------------
async function hold(stationId, mode) {
  try {
    if (mode === null) await send("DELETE", `/api/stations/${encodeURIComponent(stationId)}/hold`);
    else await send("PUT", `/api/stations/${encodeURIComponent(stationId)}/hold`, { mode, reason: "from the dashboard" });
    say(mode ? `${stationId}: ${mode}` : `${stationId}: hold lifted`);
  } catch (error) { say(`${stationId}: ${error.message}`); }
  refresh();
}

// how the volt-watt rule reaches a station: its monitors, its DER control, its last notice
function voltageDetail(vc) {
  const parts = [`monitors: ${vc.monitors.state}${vc.monitors.detail ? ` (${vc.monitors.detail})` : ""}`,
    `DER control: ${vc.der.state}${vc.der.detail ? ` (${vc.der.detail})` : ""}`];
  if (vc.last_event) parts.push(`last: ${time(vc.last_event.at)} ${vc.last_event.detail}`);
  return parts.join("\n");
}

function renderStations(data) {
  const body = $("stations").tBodies[0];
  const rows = data.stations.map((s) => {
    const lines = (f) => s.connectors.length ? s.connectors.map((c) => el("div", {}, f(c))) : ["–"];
    const actions = !loggedIn ? null : (s.hold
      ? el("button", { type: "button", class: "resume", onclick: () => hold(s.station_id, null) }, "Resume DR")
      : el("span", {},
        el("button", { type: "button", class: "pause", onclick: () => hold(s.station_id, "pause") }, "Pause"),
        el("button", { type: "button", class: "exempt", onclick: () => hold(s.station_id, "exempt") }, "Exempt")));
    return el("tr", { "data-station": s.station_id },
      el("td", {}, s.station_id, s.connected ? "" : " (offline)",
        s.hold ? el("div", {}, el("span", { class: "hold" }, s.hold.mode)) : null,
        s.upstream ? el("div", { class: "muted small upstream" },
          `CSMS ${s.upstream.link}` + (s.upstream.queue ? `, ${s.upstream.queue} queued` : "")) : null),
      el("td", {}, ...lines((c) => c.connector_id)),
      el("td", {}, ...lines((c) => c.status || "–")),
      el("td", {}, ...lines((c) => (c.session ? `tx ${c.session.transaction_id} since ${time(c.session.started_at)}` : "–"))),
      el("td", { class: "num power" }, kw(s.power_w)),
      el("td", { class: "num limit" }, kw(s.limit_w),
        ...s.connectors.filter((c) => c.limit_w !== null).map((c) =>
          el("div", { class: "muted small", title: c.profile_purpose }, `#${c.connector_id} ${kw(c.limit_w)}`)),
        s.upstream && s.upstream.limit_w !== null
          ? el("div", { class: "muted small operator-limit", title: s.upstream.limit_reason }, `operator ${kw(s.upstream.limit_w)}`)
          : null),
      el("td", { class: `profile state-${s.profile_state}`, title: s.profile_detail },
        s.profile_state + (s.verified ? " ✓" : ""),
        s.life ? el("div", { class: "life muted small", title: s.life.counted_as ? `counted at: ${s.life.counted_as.replaceAll("_", " ")}` : "" },
          s.life.phase.replaceAll("_", " ") + (s.life.since ? ` since ${time(s.life.since)}` : "")) : null),
      el("td", {}, time(s.last_seen)),
      el("td", { class: "reason small" }, s.limit_reason,
        el("div", { class: "muted voltage-source", title: voltageDetail(s.voltage_control) },
          `voltage from ${s.voltage_source}`)),
      el("td", { class: "actions" }, actions));
  });
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 10, class: "muted" }, "no stations yet"))]));
}

// login ----------------------------------------------------------------------------------------
function renderSession(session) {
  loggedIn = session.logged_in;
  $("login-form").hidden = loggedIn || !session.login_enabled;
  $("logged-in").hidden = !loggedIn;
  $("login-disabled").hidden = session.login_enabled;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    renderSession({ ...(await send("POST", "/api/login", { password: $("password").value })), login_enabled: true });
    $("password").value = "";
    say("");
  } catch (error) { say(`Login failed: ${error.message}`); }
  refresh();
});

$("logout").addEventListener("click", async () => {
  await send("POST", "/api/logout");
  refresh();
});

$("hours").addEventListener("change", () => refresh());

// polling --------------------------------------------------------------------------------------
let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const hours = $("hours").value;
    const session = await api("/api/session");
    renderSession(session);
    if (session.login_required && !session.logged_in) {
      say("Log in to see the site.");
      return;
    }
    const [site, load, events, stations] = await Promise.all([
      api("/api/site"), api(`/api/load?hours=${hours}`), api("/api/events"), api("/api/stations"),
    ]);
    if ($("message").textContent === "Log in to see the site.") say("");
    renderSite(site);
    renderChart(load, site.at);
    renderEvents(events);
    renderStations(stations);
    document.body.dataset.updated = site.at;
  } catch (error) {
    say(`Cannot reach the bridge: ${error.message}`);
  } finally {
    busy = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
