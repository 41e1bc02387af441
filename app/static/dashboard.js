// Live IMOEX / RTSI dashboard: REST for the first paint and history, WebSocket for updates.
"use strict";

(() => {
  const CODES = ["IMOEX", "RTSI"];
  const MSK_OFFSET_MS = 3 * 3600 * 1000; // Moscow is UTC+3 all year, whatever the browser's zone
  const DEFAULT_CADENCE_MS = 15000;
  const STALE_AFTER_INTERVALS = 3;
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;
  const PING_EVERY_MS = 20000;
  const HISTORY_LIMIT = 10000; // the API caps one request here; it returns the latest ones
  const MAX_POINTS = 100000; // per index; a 1 s grid for a whole day stays under this
  const HEARTBEAT_FRESH_MS = 30000; // a heartbeat this recent still tells the session state
  const CONTRIBUTIONS_KEPT = 16; // publications whose largest movers are kept to match the table

  const state = {
    latest: {}, // code -> last index object
    series: {}, // code -> [{t: epoch ms, v: points}] ascending
    cadenceMs: DEFAULT_CADENCE_MS,
    lastMessageAt: 0, // browser clock, ms: stale is judged by arrival, not by server time
    lastHeardAt: 0, // any message, pongs included: silence means a dead connection
    conn: "connecting",
    ws: null,
    attempts: 0,
    everOpened: false,
    reconnectAt: 0,
    pingTimer: 0,
    constituents: [],
    constituentsCode: "IMOEX",
    constituentsSeq: null,
    // secid -> previous close price of the line, for the trading day `referenceDay` (Moscow date).
    reference: new Map(),
    referenceDay: "",
    movers: new Map(), // "CODE:seq" -> contributions of that publication, the latest few only
    heartbeat: null, // the last heartbeat and when it came
    heartbeatAt: 0,
    resumed: 0, // resumes by seq after a reconnect, shown on the status element for monitoring
    constituentsTimer: 0,
    sort: { key: "weight", dir: -1 },
    drawQueued: false,
  };

  const $ = (sel, root = document) => root.querySelector(sel);
  const card = (code) => $(`.card[data-code="${code}"]`);

  // ---- formatting -------------------------------------------------------

  const num = (x, digits) =>
    Number(x).toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const signed = (x, digits) => {
    const shown = Number(x.toFixed(digits)); // no sign on a change that rounds to zero
    return (shown > 0 ? "+" : shown < 0 ? "−" : "") + num(Math.abs(x), digits);
  };
  const pad2 = (n) => String(n).padStart(2, "0");

  function mskParts(ms) {
    const d = new Date(ms + MSK_OFFSET_MS);
    return {
      date: `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`,
      hm: `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`,
      hms: `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`,
    };
  }

  /** Epoch ms of the Moscow midnight that starts the day containing `ms`. */
  function mskDayStart(ms) {
    const day = 86400000;
    return Math.floor((ms + MSK_OFFSET_MS) / day) * day - MSK_OFFSET_MS;
  }

  function priceDigits(p) {
    if (Math.abs(p) >= 100) return 2;
    if (Math.abs(p) >= 1) return 3;
    return 5;
  }

  function compactRoubles(x) {
    const steps = [[1e12, "trn"], [1e9, "bn"], [1e6, "mn"]];
    for (const [size, unit] of steps) if (Math.abs(x) >= size) return `₽${num(x / size, 2)} ${unit}`;
    return `₽${num(x, 0)}`;
  }

  // ---- data in ----------------------------------------------------------

  async function getJSON(path) {
    const resp = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
    return resp.json();
  }

  function toPoint(msg) {
    const t = Date.parse(msg.time);
    const v = isNum(msg.precise_value) ? msg.precise_value : msg.value;
    return isNum(t) && isNum(v) ? { t, v } : null;
  }

  /** Merge points into a series, keeping time order, one point per instant and only one day. */
  function mergePoints(code, points) {
    let series = state.series[code] || [];
    const one = points.length === 1 ? points[0] : null;
    const last = series[series.length - 1];
    if (one && last && one.t > last.t && mskDayStart(one.t) === mskDayStart(last.t)) {
      series.push(one); // the common case, a live point after the last one: no re-sort
    } else {
      const byTime = new Map(series.map((p) => [p.t, p]));
      for (const p of points) if (p) byTime.set(p.t, p);
      series = [...byTime.values()].sort((a, b) => a.t - b.t);
      const end = series[series.length - 1];
      if (end) series = series.filter((p) => p.t >= mskDayStart(end.t)); // a new day, a new chart
    }
    if (series.length > MAX_POINTS) series = series.slice(-MAX_POINTS);
    state.series[code] = series;
    inferCadence(series);
  }

  /** The grid step is the smallest gap between publications; the stale timer depends on it. */
  function inferCadence(points) {
    let best = Infinity;
    for (let i = Math.max(1, points.length - 50); i < points.length; i++) {
      const gap = points[i].t - points[i - 1].t;
      if (gap > 0 && gap < best) best = gap;
    }
    if (best !== Infinity && best !== state.cadenceMs) {
      state.cadenceMs = best;
      $("#cadence-note").textContent = `Published every ${best / 1000} s.`;
    }
  }

  function applyIndex(msg) {
    if (!msg || !CODES.includes(msg.code)) return;
    const prev = state.latest[msg.code];
    // A late REST answer must not overwrite a newer value that came over the socket.
    if (prev && Date.parse(msg.time) < Date.parse(prev.time)) return;
    state.latest[msg.code] = msg;
    if (msg.contributions && msg.seq !== null && msg.seq !== undefined) {
      const { contributions, divisor, fx_rate: fx } = msg;
      state.movers.set(`${msg.code}:${msg.seq}`, { contributions, divisor, fx });
      while (state.movers.size > CONTRIBUTIONS_KEPT) state.movers.delete(state.movers.keys().next().value);
    }
    mergePoints(msg.code, [toPoint(msg)]);
    renderCard(msg.code, prev);
    queueDraw();
  }

  async function loadHistory(code, sinceMs) {
    const since = new Date(sinceMs).toISOString();
    const path = `/v1/indices/${code}/history?since=${encodeURIComponent(since)}`;
    const rows = await getJSON(`${path}&limit=${HISTORY_LIMIT}`);
    const list = Array.isArray(rows) ? rows : rows.values || rows.history || [];
    mergePoints(code, list.map(toPoint));
    queueDraw();
  }

  async function loadInitial() {
    try {
      const list = await getJSON("/v1/indices");
      for (const msg of Array.isArray(list) ? list : []) applyIndex(msg);
    } catch (err) {
      console.warn("indices", err);
    }
    await Promise.all(
      CODES.map((code) => {
        const last = state.latest[code] && Date.parse(state.latest[code].time);
        const since = mskDayStart(isNum(last) ? last : Date.now());
        return loadHistory(code, since).catch((err) => console.warn("history", code, err));
      }),
    );
    loadConstituents();
  }

  /** After a gap (the history no longer reaches back to our seq), fetch what can still be had. */
  function backfill() {
    for (const code of CODES) {
      const pts = state.series[code] || [];
      const since = pts.length ? pts[pts.length - 1].t : mskDayStart(Date.now());
      loadHistory(code, since).catch((err) => console.warn("backfill", code, err));
    }
  }

  // ---- cards ------------------------------------------------------------

  function renderCard(code, prev) {
    const el = card(code);
    const msg = state.latest[code];
    if (!el || !msg) return;
    const set = (field, text) => {
      const node = $(`[data-field="${field}"]`, el);
      if (node) node.textContent = text;
    };
    const valueNode = $(`[data-field="value"]`, el);
    const hasValue = isNum(msg.value);
    set("value", hasValue ? num(msg.value, 2) : "—");
    valueNode.dataset.value = hasValue ? msg.value.toFixed(2) : "";
    el.dataset.seq = msg.seq ?? "";
    el.dataset.time = msg.time || "";
    if (hasValue && prev && isNum(prev.value) && prev.value !== msg.value) {
      const cls = msg.value > prev.value ? "tick-up" : "tick-down";
      valueNode.classList.add(cls);
      setTimeout(() => valueNode.classList.remove(cls), 300);
    }
    const change = isNum(msg.change) ? msg.change : null;
    el.dataset.dir = change === null || change === 0 ? "flat" : change > 0 ? "up" : "down";
    set("change", change === null ? "—" : signed(change, 2));
    set("change_percent", isNum(msg.change_percent) ? `(${signed(msg.change_percent, 2)}%)` : "");
    if (msg.time) {
      const p = mskParts(Date.parse(msg.time));
      set("time", `${p.hms} MSK`);
      $(`[data-field="time"]`, el).title = `${p.date} ${p.hms} Moscow time`;
    }
    set("previous_close", isNum(msg.previous_close) ? num(msg.previous_close, 2) : "—");
    set("fx_rate", isNum(msg.fx_rate) ? num(msg.fx_rate, 4) : "—");
    set("capitalization", isNum(msg.capitalization) ? compactRoubles(msg.capitalization) : "—");
    document.title = CODES.map((c) => {
      const m = state.latest[c];
      return m && isNum(m.value) ? `${c} ${num(m.value, 2)}` : c;
    }).join(" · ");
  }

  // ---- chart ------------------------------------------------------------

  function queueDraw() {
    if (state.drawQueued) return;
    state.drawQueued = true;
    requestAnimationFrame(() => {
      state.drawQueued = false;
      for (const code of CODES) drawChart(code);
    });
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function niceStep(range, count) {
    const raw = range / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const unit = [1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) || 10;
    return unit * mag;
  }

  function drawChart(code) {
    const canvas = $(`.card[data-code="${code}"] canvas`);
    const w = canvas ? canvas.clientWidth : 0;
    const h = canvas ? canvas.clientHeight : 0;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = "11px system-ui, sans-serif";
    const points = state.series[code] || [];
    const msg = state.latest[code];
    const close = msg && isNum(msg.previous_close) ? msg.previous_close : null;
    canvas.dataset.points = String(points.length);
    const muted = cssVar("--muted");
    if (!points.length) {
      ctx.fillStyle = muted;
      ctx.textAlign = "center";
      ctx.fillText("No publications today yet", w / 2, h / 2);
      return;
    }

    let lo = close ?? Infinity;
    let hi = close ?? -Infinity;
    for (const p of points) {
      lo = Math.min(lo, p.v);
      hi = Math.max(hi, p.v);
    }
    // A floor of 0.05% of the level keeps a quiet day from looking like a storm.
    const floor = Math.abs(hi) * 0.0005 || 1;
    const span = Math.max(hi - lo, floor);
    const mid = (hi + lo) / 2;
    lo = mid - span * 0.58;
    hi = mid + span * 0.58;
    const last = points[points.length - 1];
    const t0 = points[0].t;
    const t1 = Math.max(last.t, t0 + state.cadenceMs);
    const pad = { l: 4, r: 64, t: 8, b: 20 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * pw;
    const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * ph;
    const hline = (at) => {
      const yy = Math.round(at) + 0.5; // a 1 px line on a pixel row, not blurred across two
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(pad.l + pw, yy);
      ctx.stroke();
    };
    const tagY = Math.min(Math.max(y(last.v), pad.t + 8), pad.t + ph - 8);

    // Grid with value labels on the right, leaving room for the latest-value tag.
    ctx.strokeStyle = cssVar("--grid");
    ctx.fillStyle = muted;
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    const step = niceStep(hi - lo, 4);
    let digits = 0;
    while (digits < 6 && Math.abs(step * 10 ** digits - Math.round(step * 10 ** digits)) > 1e-6) digits++;
    for (let i = Math.ceil(lo / step); i * step <= hi; i++) {
      hline(y(i * step));
      if (Math.abs(y(i * step) - tagY) > 14) {
        ctx.fillText(num(i * step, digits), pad.l + pw + 6, y(i * step));
      }
    }

    // Time labels in Moscow time; the end ones align inwards so they are not clipped.
    ctx.textBaseline = "alphabetic";
    const slots = Math.floor((t1 - t0) / state.cadenceMs) + 1; // no two labels on one instant
    const labels = Math.max(2, Math.min(6, Math.floor(pw / 90), slots));
    for (let i = 0; i < labels; i++) {
      const t = t0 + ((t1 - t0) * i) / (labels - 1);
      const parts = mskParts(t);
      ctx.textAlign = i === 0 ? "left" : i === labels - 1 ? "right" : "center";
      ctx.fillText(t1 - t0 < 10 * 60000 ? parts.hms : parts.hm, x(t), h - 5);
    }

    if (close !== null) {
      ctx.setLineDash([5, 4]);
      ctx.strokeStyle = muted;
      hline(y(close));
      ctx.setLineDash([]);
    }

    const colour = cssVar(close === null || last.v >= close ? "--up" : "--down");
    ctx.beginPath();
    for (const p of points) ctx.lineTo(x(p.t), y(p.v)); // a day of 1 s points draws in a few ms
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI);
    ctx.fillStyle = colour;
    ctx.fill();

    // The latest value tagged on the axis, as trading screens do.
    ctx.fillRect(pad.l + pw + 2, tagY - 8, pad.r - 2, 16);
    ctx.fillStyle = cssVar("--panel");
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.fillText(num(last.v, 2), pad.l + pw + 5, tagY);
  }

  // ---- constituents -----------------------------------------------------

  function normaliseRow(row) {
    const weight = row.weight ?? row.weight_percent ?? row.weight_pct;
    const reference = row.reference_price ?? row.previous_close;
    return {
      secid: String(row.secid ?? row.ticker ?? ""),
      issuer: String(row.issuer ?? row.shortname ?? ""),
      price: isNum(row.price) ? row.price : null,
      weight: isNum(weight) ? weight : null,
      shares: isNum(row.index_shares) ? row.index_shares : null,
      reference: isNum(reference) ? reference : null,
      last_tick_time: row.last_tick_time ? Date.parse(row.last_tick_time) : null,
      stale: row.stale === true,
      change: null, // % against the line's previous close
      contribution: null, // index points the line adds to the move since the previous close
    };
  }

  /**
   * Change and contribution of each line since the previous close. The previous close price of a
   * line is, in order: the API's own field; the price of a line not traded today (a line is
   * valued at its previous close until its first trade); the one implied by the publication's
   * largest movers (exact, they are not rounded). It is constant over a trading day, so once
   * known it is kept until the day changes.
   */
  function computeMoves(rows, code, seq, asOfMs) {
    const day = isNum(asOfMs) ? mskParts(asOfMs).date : "";
    if (day !== state.referenceDay) {
      state.reference.clear();
      state.referenceDay = day;
    }
    const known = state.reference;
    const published = isNum(seq) ? state.movers.get(`${code}:${seq}`) : null;
    const scaleOf = (m) => (m && isNum(m.divisor) ? m.divisor * (isNum(m.fx) ? m.fx : 1) : null);
    const moved = new Map(published ? published.contributions.since_close || [] : []);
    for (const r of rows) {
      if (r.price === null) continue;
      if (r.reference !== null) known.set(r.secid, r.reference);
      else if (r.last_tick_time === null) known.set(r.secid, r.price);
      else if (moved.has(r.secid) && r.shares && scaleOf(published)) {
        known.set(r.secid, r.price - (moved.get(r.secid) * scaleOf(published)) / r.shares);
      }
    }
    const latest = state.latest[code];
    const scale = scaleOf(latest && { divisor: latest.divisor, fx: latest.fx_rate });
    for (const r of rows) {
      const ref = known.get(r.secid);
      if (r.price === null || !isNum(ref) || ref <= 0) continue;
      r.change = (100 * (r.price - ref)) / ref;
      if (moved.has(r.secid)) r.contribution = moved.get(r.secid);
      else if (scale && r.shares) r.contribution = ((r.price - ref) * r.shares) / scale;
    }
  }

  async function loadConstituents() {
    const code = state.constituentsCode;
    try {
      const data = await getJSON(`/v1/indices/${code}/constituents`);
      if (code !== state.constituentsCode) return; // the picker moved on meanwhile
      const rows = Array.isArray(data) ? data : data.constituents || [];
      state.constituents = rows.map(normaliseRow);
      const asOf = !Array.isArray(data) && (data.as_of || data.time);
      state.constituentsSeq = Array.isArray(data) ? null : data.seq;
      computeMoves(state.constituents, code, state.constituentsSeq, asOf ? Date.parse(asOf) : NaN);
      $("#constituents-asof").textContent = asOf
        ? `as of ${mskParts(Date.parse(asOf)).hms} MSK · ${rows.length} lines`
        : `${rows.length} lines`;
      renderConstituents();
    } catch (err) {
      console.warn("constituents", err);
      if (!state.constituents.length) {
        $("#constituents tbody").innerHTML = `<tr><td colspan="7" class="muted">Constituents unavailable</td></tr>`;
      }
    }
  }

  function scheduleConstituents() {
    // Both indices publish at the same instant; one refresh covers the pair.
    clearTimeout(state.constituentsTimer);
    state.constituentsTimer = setTimeout(loadConstituents, 300);
  }

  function renderConstituents() {
    const { key, dir } = state.sort;
    const rows = [...state.constituents].sort((a, b) => {
      const av = a[key];
      const bv = b[key];
      if (av === null || av === "") return 1; // blanks last whatever the direction
      if (bv === null || bv === "") return -1;
      return (typeof av === "string" ? av.localeCompare(bv) : av - bv) * dir;
    });
    const maxWeight = Math.max(1, ...rows.map((r) => r.weight || 0));
    // A base without issuer names gives tickers there; the column then adds nothing.
    const named = rows.some((r) => r.issuer && !r.secid.startsWith(r.issuer));
    $("#constituents").classList.toggle("no-issuer", !named);
    const body = document.createElement("tbody");
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.secid = r.secid;
      if (r.contribution !== null) tr.dataset.contribution = String(r.contribution);
      const cells = [
        ["secid", r.secid],
        ["col-issuer", r.issuer],
        ["num price", r.price === null ? "—" : num(r.price, priceDigits(r.price))],
        ["num chg", r.change === null ? "—" : `${signed(r.change, 2)}%`],
        ["num weight", r.weight === null ? "—" : num(r.weight, 2)],
        ["num contribution", r.contribution === null ? "—" : signed(r.contribution, 2)],
        ["num col-tick", r.last_tick_time ? mskParts(r.last_tick_time).hms : "—"],
      ];
      for (const [cls, text] of cells) {
        const td = document.createElement("td");
        td.className = cls;
        td.textContent = text;
        tr.appendChild(td);
      }
      if (r.weight !== null) {
        const bar = document.createElement("span");
        bar.className = "weight-bar";
        bar.style.width = `${Math.round((48 * r.weight) / maxWeight)}px`;
        tr.querySelector(".weight").prepend(bar);
      }
      for (const [cls, x] of [["chg", r.change], ["contribution", r.contribution]]) {
        const shown = x === null ? 0 : Number(x.toFixed(2));
        tr.querySelector(`.${cls}`).dataset.dir = shown > 0 ? "up" : shown < 0 ? "down" : "flat";
      }
      if (r.stale) {
        tr.classList.add("stale");
        tr.dataset.stale = "true";
        const tag = document.createElement("span");
        tag.className = "stale-tag";
        tag.textContent = "stale";
        tag.title = "no trade recently: the price may be old";
        tr.querySelector(".secid").append(" ", tag);
      }
      body.appendChild(tr);
    }
    $("#constituents tbody").replaceWith(body);
    for (const th of document.querySelectorAll("#constituents th")) {
      const sorted = th.dataset.key === key;
      th.setAttribute("aria-sort", sorted ? (dir > 0 ? "ascending" : "descending") : "none");
    }
  }

  // ---- connection -------------------------------------------------------

  const CONN_TEXT = { paused: "session paused", stale: "stale" };

  function setConn(conn, detail) {
    state.conn = conn;
    const el = $("#conn");
    el.dataset.state = conn;
    const label = CONN_TEXT[conn] || conn;
    $("#conn-text").textContent = detail ? `${label} ${detail}` : label;
  }

  /** A snapshot with `gap` after a store reset starts its seq over: the older points stay drawn
   * (the chart is by time), but an older value must not hold the newer one off the card. */
  function forgetSeq(msg) {
    const prev = state.latest[msg.code];
    if (prev && isNum(prev.seq) && isNum(msg.seq) && msg.seq < prev.seq) delete state.latest[msg.code];
  }

  /** The state of an open socket: silence first, then what the publications and heartbeats say. */
  function showConn() {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
    const quiet = Date.now() - state.lastMessageAt;
    const statuses = CODES.map((c) => state.latest[c] && state.latest[c].status);
    const beat = state.heartbeat && Date.now() - state.heartbeatAt < HEARTBEAT_FRESH_MS ? state.heartbeat : null;
    const sessionClosed = beat && (beat.feed === "paused" || (beat.engine && beat.engine.session_open === false));
    if (sessionClosed || (quiet <= STALE_AFTER_INTERVALS * state.cadenceMs && statuses.includes("paused"))) {
      setConn("paused");
    } else if (quiet > STALE_AFTER_INTERVALS * state.cadenceMs) {
      setConn("stale", `· ${Math.round(quiet / 1000)} s since update`);
    } else if (statuses.includes("stale") || (beat && beat.feed === "stale")) {
      setConn("stale", "· no ticks from the feed");
    } else {
      setConn("live");
    }
  }

  function connect() {
    setConn(state.everOpened ? "reconnecting" : "connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    state.ws = ws;
    ws.onopen = () => {
      state.lastMessageAt = state.lastHeardAt = Date.now();
      // Resume by seq: the server replays exactly the publications after the last one we have.
      const fromSeq = {};
      for (const code of CODES) {
        const seq = state.latest[code] && state.latest[code].seq;
        if (Number.isInteger(seq)) fromSeq[code] = seq;
      }
      const subscribe = { op: "subscribe", indices: CODES, contributions: true };
      if (Object.keys(fromSeq).length) subscribe.from_seq = fromSeq;
      ws.send(JSON.stringify(subscribe));
      state.everOpened = true;
      state.heartbeat = null;
      showConn();
      clearInterval(state.pingTimer);
      state.pingTimer = setInterval(() => {
        // A connection that lost its network may never report closing: give up on it ourselves.
        if (Date.now() - state.lastHeardAt > 2 * PING_EVERY_MS) reconnectLater(ws);
        else if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ op: "ping" }));
      }, PING_EVERY_MS);
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      state.lastHeardAt = Date.now();
      if (msg.type === "snapshot" || msg.type === "update") {
        state.lastMessageAt = Date.now();
        state.attempts = 0; // only a socket that delivers data resets the backoff
        if (msg.gap) forgetSeq(msg);
        applyIndex(msg);
        if (msg.gap) backfill();
        showConn();
        if (msg.code === state.constituentsCode) scheduleConstituents();
      } else if (msg.type === "resumed") {
        state.attempts = 0;
        state.resumed += 1;
        $("#conn").dataset.resumed = String(state.resumed);
      } else if (msg.type === "heartbeat") {
        state.heartbeat = msg;
        state.heartbeatAt = Date.now();
        showConn();
      } else if (msg.type === "error") {
        console.warn("server error:", msg.reason);
      }
    };
    ws.onerror = () => ws.close();
    ws.onclose = () => reconnectLater(ws);
  }

  function reconnectLater(ws) {
    if (state.ws !== ws) return; // this socket was already given up on
    state.ws = null;
    ws.close();
    clearInterval(state.pingTimer);
    const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** state.attempts);
    state.attempts += 1;
    // Jitter spreads the reconnects of many pages after a server restart.
    const delay = backoff * (0.5 + Math.random() * 0.5);
    state.reconnectAt = Date.now() + delay;
    setConn("reconnecting", `in ${Math.ceil(delay / 1000)} s`);
    setTimeout(connect, delay);
  }

  function watchdog() {
    if (state.conn === "reconnecting" && state.reconnectAt > Date.now()) {
      setConn("reconnecting", `in ${Math.ceil((state.reconnectAt - Date.now()) / 1000)} s`);
    }
    showConn();
  }

  // ---- theme ------------------------------------------------------------

  function toggleTheme() {
    const system = matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
    const next = (document.documentElement.dataset.theme || system) === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try {
      localStorage.setItem("theme", next);
    } catch (err) {
      /* storage may be blocked; the choice then lasts for this page only */
    }
    queueDraw();
  }

  // ---- start ------------------------------------------------------------

  function start() {
    $("#theme-toggle").addEventListener("click", toggleTheme);
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", queueDraw);
    window.addEventListener("resize", queueDraw);
    for (const th of document.querySelectorAll("#constituents th")) {
      $("button", th).addEventListener("click", () => {
        const key = th.dataset.key;
        const numeric = th.classList.contains("num");
        state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: numeric ? -1 : 1 };
        renderConstituents();
      });
    }
    $("#constituents-code").addEventListener("change", (event) => {
      state.constituentsCode = event.target.value;
      loadConstituents();
    });
    setInterval(watchdog, 1000);
    loadInitial();
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
