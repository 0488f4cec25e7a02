// antssl map viewer: the polar map (EPSG:3031) drawn on a canvas, no library, no network
// beyond this service. World coordinates are EPSG:3031 metres; the view is a centre
// (cx, cy) and a scale (metres per CSS pixel). State for tests and the bench lives in
// window.antsslViewer.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  const tileLayer = document.createElement("canvas");
  const tileCtx = tileLayer.getContext("2d");
  const TOKEN_KEY = "antssl.token";
  // Overlays in black / white / yellow: no cluster colour (antssl.maps.palette) is near them.
  const RESULT = "#111111", RESULT_HOT = "#ffd400", QUERY = "#ffffff", POS = "#00e000", NEG = "#ff0030";

  const S = {
    tiles: null, idIndex: new Map(), basemap: null, clusters: null,
    view: { cx: 0, cy: 0, scale: 5000 }, w: 0, h: 0, dpr: 1,
    positives: [], negatives: [], patch: null, results: [], hot: -1, focus: -1,
    markers: [], pending: false, drawMs: 0, firstRenderMs: null, lastQuery: null, ready: false, error: null,
  };
  window.antsslViewer = S;

  // ------------------------------------------------------------------ HTTP, token

  let tokenPrompt = null;
  function askToken() {
    if (!tokenPrompt) {
      tokenPrompt = new Promise((resolve) => {
        const dlg = $("token-dialog");
        $("token-form").onsubmit = () => {
          sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
          tokenPrompt = null;
          resolve();
        };
        dlg.showModal();
      });
    }
    return tokenPrompt;
  }

  async function api(path, opts = {}, retry = true) {
    const headers = Object.assign({}, opts.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status === 401 && retry) {
      await askToken();
      return api(path, opts, false);
    }
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
      const err = new Error(`${r.status}: ${detail}`);
      err.status = r.status;
      throw err;
    }
    return r;
  }

  const imageUrls = new Map();
  function thumb(id, size = 64) {
    // An <img> of the tile's thumbnail, fetched with the token (an <img src> cannot send it).
    const img = new Image(size, size);
    img.alt = id;
    img.dataset.tileId = id;
    const key = id + "@" + size;
    let url = imageUrls.get(key);
    if (!url) {
      const path = id.split("/").map(encodeURIComponent).join("/");
      url = api(`/v1/tiles/${path}/image.png?size=${size}`)
        .then((r) => r.blob()).then((b) => URL.createObjectURL(b));
      imageUrls.set(key, url);
      url.catch(() => imageUrls.delete(key));
    }
    url.then((u) => { img.src = u; }, () => { img.classList.add("missing"); });
    return img;
  }

  // ------------------------------------------------------------------ projection

  // Inverse EPSG:3031 (polar stereographic south, WGS84, true scale at 71°S), for the
  // cursor read-out and "bbox = view": lon = atan2(x, y); lat from t by fixed-point iteration.
  const A = 6378137, F = 1 / 298.257223563, E = Math.sqrt(F * (2 - F)), PHI_C = 71 * Math.PI / 180;
  const M_C = Math.cos(PHI_C) / Math.sqrt(1 - E * E * Math.sin(PHI_C) ** 2);
  const T_C = Math.tan(Math.PI / 4 - PHI_C / 2) / ((1 - E * Math.sin(PHI_C)) / (1 + E * Math.sin(PHI_C))) ** (E / 2);
  function toLonLat(x, y) {
    const rho = Math.hypot(x, y);
    const t = rho * T_C / (A * M_C);
    let phi = Math.PI / 2 - 2 * Math.atan(t);
    for (let i = 0; i < 8; i++) {
      const es = E * Math.sin(phi);
      phi = Math.PI / 2 - 2 * Math.atan(t * ((1 - es) / (1 + es)) ** (E / 2));
    }
    return [Math.atan2(x, y) * 180 / Math.PI, -phi * 180 / Math.PI];
  }

  const sx = (x) => (x - S.view.cx) / S.view.scale + S.w / 2;
  const sy = (y) => S.h / 2 - (y - S.view.cy) / S.view.scale;
  const wx = (px) => (px - S.w / 2) * S.view.scale + S.view.cx;
  const wy = (py) => S.view.cy - (py - S.h / 2) * S.view.scale;

  // ------------------------------------------------------------------ data

  function loadTiles(doc) {
    const n = doc.n;
    const t = {
      n, ids: doc.ids, x: Float64Array.from(doc.x), y: Float64Array.from(doc.y),
      size: Float64Array.from(doc.size), cluster: Int32Array.from(doc.cluster),
      scene: Int32Array.from(doc.scene), scenes: doc.scenes, palette: doc.palette || [],
    };
    t.rgba = new Uint32Array(Math.max(t.palette.length, 1));
    t.palette.forEach((hex, i) => {
      const v = parseInt(hex.slice(1), 16);
      t.rgba[i] = (215 << 24) | ((v & 255) << 16) | (((v >> 8) & 255) << 8) | (v >> 16); // ABGR
    });
    S.idIndex = new Map(doc.ids.map((id, i) => [id, i]));
    S.tiles = t;
  }

  function buildBasemap(doc) {
    const layers = { land: new Path2D(), ice_shelf: new Path2D(), coastline: new Path2D() };
    const grat = [];
    const ring = (path, pts, close) => {
      pts.forEach(([x, y], i) => (i ? path.lineTo(x, y) : path.moveTo(x, y)));
      if (close) path.closePath();
    };
    for (const f of doc.features) {
      const g = f.geometry, layer = f.properties.layer;
      if (layer === "graticule") {
        const label = f.properties.label;
        grat.push({ pts: g.coordinates, label, step: f.properties.step || 30, parallel: label.endsWith("S") });
        continue;
      }
      const path = layers[layer];
      if (g.type === "Polygon") g.coordinates.forEach((r) => ring(path, r, true));
      else if (g.type === "MultiPolygon") g.coordinates.forEach((p) => p.forEach((r) => ring(path, r, true)));
      else if (g.type === "LineString") ring(path, g.coordinates, false);
      else if (g.type === "MultiLineString") g.coordinates.forEach((l) => ring(path, l, false));
    }
    S.basemap = { layers, grat };
  }

  function fit() {
    const t = S.tiles;
    let x0 = -3e6, x1 = 3e6, y0 = -3e6, y1 = 3e6;
    if (t && t.n) {
      x0 = y0 = Infinity; x1 = y1 = -Infinity;
      for (let i = 0; i < t.n; i++) {
        const h = t.size[i] / 2;
        x0 = Math.min(x0, t.x[i] - h); x1 = Math.max(x1, t.x[i] + h);
        y0 = Math.min(y0, t.y[i] - h); y1 = Math.max(y1, t.y[i] + h);
      }
    }
    S.view.cx = (x0 + x1) / 2; S.view.cy = (y0 + y1) / 2;
    S.view.scale = Math.max((x1 - x0) / (S.w - 40), (y1 - y0) / (S.h - 40), 1);
  }

  // ------------------------------------------------------------------ drawing

  let pending = false;
  function redraw() {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
  }

  function resize() {
    S.dpr = window.devicePixelRatio || 1;
    S.w = canvas.clientWidth; S.h = canvas.clientHeight;
    canvas.width = tileLayer.width = Math.round(S.w * S.dpr);
    canvas.height = tileLayer.height = Math.round(S.h * S.dpr);
    S.imageData = null;
  }

  function worldTransform() {
    const k = S.dpr / S.view.scale;
    ctx.setTransform(k, 0, 0, -k, (S.w / 2 - S.view.cx / S.view.scale) * S.dpr, (S.h / 2 + S.view.cy / S.view.scale) * S.dpr);
  }

  function drawTiles() {
    // Every tile as a filled square in its cluster's colour, written into one ImageData
    // (no per-tile canvas calls): O(tiles + covered pixels) per frame.
    const t = S.tiles, W = tileLayer.width, H = tileLayer.height;
    if (!S.imageData) { S.imageData = tileCtx.createImageData(W, H); S.pixels = new Uint32Array(S.imageData.data.buffer); }
    const px = S.pixels;
    px.fill(0);
    const k = S.dpr / S.view.scale, ox = (S.w / 2 - S.view.cx / S.view.scale) * S.dpr, oy = (S.h / 2 + S.view.cy / S.view.scale) * S.dpr;
    const grey = (160 << 24) | (0x90 << 16) | (0x90 << 8) | 0x90, focus = S.focus;
    for (let i = 0; i < t.n; i++) {
      const c = t.cluster[i];
      let col = c >= 0 && c < t.rgba.length ? t.rgba[c] : grey;
      if (focus >= 0 && c !== focus) col = (50 << 24) | (col & 0xffffff);
      const cx = t.x[i] * k + ox, cy = oy - t.y[i] * k, hs = t.size[i] * k / 2;
      if (hs < 1) { // under 2 px: one 2 x 2 dot, written directly
        const a = cx | 0, r = cy | 0;
        if (a < 0 || r < 0 || a >= W - 1 || r >= H - 1) continue;
        const o = r * W + a;
        px[o] = col; px[o + 1] = col; px[o + W] = col; px[o + W + 1] = col;
        continue;
      }
      let a = Math.floor(cx - hs), b = Math.ceil(cx + hs), r0 = Math.floor(cy - hs), r1 = Math.ceil(cy + hs);
      if (b <= 0 || a >= W || r1 <= 0 || r0 >= H) continue;
      if (a < 0) a = 0; if (b > W) b = W; if (r0 < 0) r0 = 0; if (r1 > H) r1 = H;
      if (b - a <= 8) {
        for (let r = r0; r < r1; r++) for (let o = r * W + a, e = r * W + b; o < e; o++) px[o] = col;
      } else {
        for (let r = r0; r < r1; r++) px.fill(col, r * W + a, r * W + b);
      }
    }
    tileCtx.putImageData(S.imageData, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(tileLayer, 0, 0);
  }

  function square(i, color, width, fill) {
    // A tile's footprint (at least 8 px), outlined in ``color`` over a contrasting halo.
    const t = S.tiles, h = t.size[i] / 2 / S.view.scale;
    const x = sx(t.x[i]), y = sy(t.y[i]), e = Math.max(h, 4);
    if (fill) { ctx.fillStyle = fill; ctx.fillRect(x - e, y - e, 2 * e, 2 * e); }
    ctx.strokeStyle = color === "#ffffff" || color === RESULT_HOT ? "#000" : "#fff";
    ctx.lineWidth = width + 2;
    ctx.strokeRect(x - e, y - e, 2 * e, 2 * e);
    ctx.strokeStyle = color; ctx.lineWidth = width;
    ctx.strokeRect(x - e, y - e, 2 * e, 2 * e);
    return [x, y];
  }

  function draw() {
    const t0 = performance.now();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#cfdde8";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const m = S.view.scale;
    if (S.basemap) {
      worldTransform();
      const L = S.basemap.layers;
      ctx.fillStyle = "#f4f4f1"; ctx.fill(L.land, "evenodd");
      ctx.fillStyle = "#e3edf5"; ctx.fill(L.ice_shelf, "evenodd");
      ctx.strokeStyle = "#6d7f8f"; ctx.lineWidth = 0.8 * m; ctx.stroke(L.coastline);
    }
    const t1 = performance.now();
    if (S.tiles) drawTiles();
    const t2 = performance.now();
    ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
    if (S.basemap) {
      ctx.strokeStyle = "rgba(60,80,100,.35)"; ctx.lineWidth = 0.7; ctx.setLineDash([4, 4]);
      ctx.fillStyle = "#51606e"; ctx.font = "10px system-ui";
      // a finer grid as the map zooms in: 10° x 30°, 5° x 10°, then 1° x 2°
      const [latStep, lonStep] = m > 4000 ? [10, 30] : m > 800 ? [5, 10] : [1, 2];
      for (const g of S.basemap.grat) {
        if (g.step < (g.parallel ? latStep : lonStep)) continue;
        ctx.beginPath();
        let label = null, qx = 0, qy = 0;
        const inside = (px, py) => px > 30 && py > 14 && px < S.w - 40 && py < S.h - 30;
        g.pts.forEach(([x, y], i) => {
          const px = sx(x), py = sy(y);
          // only the segments that cross the view: a dashed line far off the canvas still
          // costs one dash per 8 px of its length
          if (i && Math.max(px, qx) >= -8 && Math.min(px, qx) <= S.w + 8 &&
              Math.max(py, qy) >= -8 && Math.min(py, qy) <= S.h + 8) {
            ctx.moveTo(qx, qy); ctx.lineTo(px, py);
          }
          // the label goes where the line first enters the view (segments sampled in tenths)
          for (let t = i ? 0.1 : 1; !label && t <= 1.001; t += 0.1) {
            const ax = qx + (px - qx) * t, ay = qy + (py - qy) * t;
            if (inside(ax, ay)) label = [ax, ay];
          }
          qx = px; qy = py;
        });
        ctx.stroke();
        if (label) ctx.fillText(g.label, label[0] + 2, label[1] - 2);
      }
      ctx.setLineDash([]);
    }
    if (S.tiles) {
      ctx.strokeStyle = "rgba(30,40,50,.7)"; ctx.lineWidth = 1; ctx.fillStyle = "#1d2630";
      for (const sc of S.tiles.scenes) {
        if (!sc.outline) continue;
        ctx.beginPath();
        sc.outline.forEach(([x, y], i) => (i ? ctx.lineTo(sx(x), sy(y)) : ctx.moveTo(sx(x), sy(y))));
        ctx.stroke();
        const [x, y] = sc.outline[0];
        ctx.fillText(sc.scene_id, sx(x) + 3, sy(y) - 4);
      }
      drawQuery();
    }
    S.drawMs = performance.now() - t0;
    S.drawParts = { basemap: t1 - t0, tiles: t2 - t1, overlays: performance.now() - t2 };
    if (S.tiles && S.basemap && S.firstRenderMs === null) {
      S.firstRenderMs = performance.now();
      S.ready = true;
      document.body.dataset.ready = "1";
    }
  }

  function drawQuery() {
    // The query tile and the examples; then the ranked result footprints, their rank labels
    // and a marker on each (visible at any zoom; rank 1 on top).
    S.positives.forEach((id, n) => { const i = S.idIndex.get(id); if (i !== undefined) square(i, n ? POS : QUERY, 3); });
    S.negatives.forEach((id) => { const i = S.idIndex.get(id); if (i !== undefined) square(i, NEG, 3); });
    const shown = S.results.map((res, j) => [res, j]).filter(([res]) => res.index !== undefined);
    const at = new Map();
    for (const [res, j] of shown) {
      const hot = j === S.hot;
      at.set(j, square(res.index, hot ? RESULT_HOT : RESULT, hot ? 3 : 2, hot ? "rgba(255,212,0,.25)" : null));
    }
    ctx.font = "bold 11px system-ui"; ctx.lineWidth = 3; ctx.strokeStyle = "#fff"; ctx.fillStyle = "#111";
    for (const [res, j] of shown) {
      const [x, y] = at.get(j);
      ctx.strokeText(String(res.rank), x + 8, y - 6); ctx.fillText(String(res.rank), x + 8, y - 6);
    }
    S.markers = [];
    for (let n = shown.length - 1; n >= 0; n--) {
      const [res, j] = shown[n], [x, y] = at.get(j), hot = j === S.hot;
      ctx.beginPath(); ctx.arc(x, y, hot ? 7 : 5, 0, 2 * Math.PI);
      ctx.fillStyle = hot ? RESULT_HOT : RESULT; ctx.fill();
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
      S.markers.push({ rank: res.rank, tile_id: res.tile_id, x, y, visible: x >= 0 && y >= 0 && x <= S.w && y <= S.h });
    }
    S.markers.reverse();
  }

  // ------------------------------------------------------------------ picking

  function pick(px, py) {
    // The tile under (px, py) whose centre is nearest; else the nearest centre within 6 px.
    const t = S.tiles; if (!t) return -1;
    const x = wx(px), y = wy(py), slack = 6 * S.view.scale;
    let best = -1, bestD = Infinity, inside = false;
    for (let i = 0; i < t.n; i++) {
      const dx = Math.abs(t.x[i] - x), dy = Math.abs(t.y[i] - y), h = t.size[i] / 2;
      const within = dx <= h && dy <= h;
      if (!within && (inside || dx > h + slack || dy > h + slack)) continue;
      const d = dx * dx + dy * dy;
      if ((within && !inside) || d < bestD) { best = i; bestD = d; inside = inside || within; }
    }
    return best;
  }

  function resultAt(px, py) {
    // The index in S.results of the result whose footprint (or marker) is under (px, py).
    for (let j = 0; j < S.results.length; j++) {
      const i = S.results[j].index;
      if (i === undefined) continue;
      const e = Math.max(S.tiles.size[i] / 2 / S.view.scale, 5);
      if (Math.abs(sx(S.tiles.x[i]) - px) <= e && Math.abs(sy(S.tiles.y[i]) - py) <= e) return j;
    }
    return -1;
  }

  // ------------------------------------------------------------------ query

  function params() {
    const scenes = [...$("scenes").selectedOptions].map((o) => o.value);
    const bbox = $("bbox").value.trim();
    return { k: parseInt($("k").value, 10) || 10, exclude_radius_km: parseFloat($("radius").value) || 0,
      distinct: $("distinct").checked, scenes: scenes.length ? scenes : null, bbox: bbox ? bbox.split(",").map(Number) : null };
  }

  function queryString(p) {
    const q = new URLSearchParams({ k: p.k, exclude_radius_km: p.exclude_radius_km, distinct: p.distinct });
    if (p.bbox) q.set("bbox", p.bbox.join(","));
    (p.scenes || []).forEach((s) => q.append("scene", s));
    return q;
  }

  let seq = 0;
  async function search(t0) {
    const p = params(), mine = ++seq;
    t0 = t0 === undefined ? performance.now() : t0;
    writeHash();
    if (!S.positives.length && !S.patch) { showResults(null); return; }
    $("status").textContent = "Searching…";
    S.pending = true;
    let r;
    try {
      if (S.patch) {
        const q = queryString(p);
        r = await api("/v1/similar?" + q, { method: "POST", body: S.patch.data, headers: { "Content-Type": S.patch.type } });
      } else if (S.positives.length === 1 && !S.negatives.length) {
        const q = queryString(p); q.set("tile_id", S.positives[0]);
        r = await api("/v1/similar?" + q);
      } else {
        const body = { tile_ids: S.positives, negatives: S.negatives, k: p.k, exclude_radius_km: p.exclude_radius_km,
          distinct: p.distinct, scenes: p.scenes, bbox: p.bbox };
        r = await api("/v1/similar", { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
      }
      const doc = await r.json();
      if (mine !== seq) return;
      showResults(doc);
    } catch (err) {
      if (mine !== seq) return;
      showResults(null, err.message);
    }
    draw();
    S.pending = false;
    S.lastQuery = { id: mine, ms: performance.now() - t0, n: S.results.length };
    $("status").textContent = `${S.results.length} result(s) in ${S.lastQuery.ms.toFixed(0)} ms`;
  }

  function showResults(doc, error) {
    const list = $("result-list");
    list.replaceChildren();
    $("error").hidden = !error; $("error").textContent = error || "";
    S.error = error || null;
    S.hot = -1;
    S.results = (doc ? doc.features : []).map((f) => ({
      rank: f.properties.rank, score: f.properties.score, tile_id: f.properties.tile_id,
      cluster: f.properties.cluster, index: S.idIndex.get(f.properties.tile_id) }));
    $("result-count").textContent = doc ? `(${S.results.length})` : "";
    $("fewer").textContent = (doc && doc.fewer) || "";
    S.results.forEach((res, j) => {
      const li = document.createElement("li");
      li.dataset.tileId = res.tile_id; li.dataset.rank = res.rank; li.dataset.score = res.score;
      const rank = document.createElement("span"); rank.className = "rank"; rank.textContent = res.rank;
      const meta = document.createElement("span"); meta.className = "meta";
      meta.textContent = `${res.tile_id} · score ${res.score.toFixed(3)} · cluster ${res.cluster}`;
      li.append(rank, thumb(res.tile_id, 48), meta);
      li.onmouseenter = () => { setHot(j, false); };
      li.onmouseleave = () => { setHot(-1, false); };
      li.onclick = () => { if (res.index !== undefined) { S.view.cx = S.tiles.x[res.index]; S.view.cy = S.tiles.y[res.index]; } setHot(j, false); writeHash(); };
      list.append(li);
    });
    redraw();
  }

  function setHot(j, scroll) {
    if (S.hot === j) return;
    S.hot = j;
    [...$("result-list").children].forEach((li, n) => li.classList.toggle("active", n === j));
    if (scroll && j >= 0) $("result-list").children[j].scrollIntoView({ block: "nearest" });
    redraw();
  }

  function showSelected() {
    const box = $("selected");
    box.replaceChildren();
    const ex = $("examples");
    ex.replaceChildren();
    if (S.patch) { box.textContent = `patch ${S.patch.name}`; return; }
    if (!S.positives.length) { box.textContent = "Click a tile on the map to find its analogues."; return; }
    const id = S.positives[0], i = S.idIndex.get(id);
    const text = document.createElement("div");
    text.innerHTML = `<b></b><br><span class="muted"></span>`;
    text.querySelector("b").textContent = id;
    text.querySelector("span").textContent = i === undefined ? "" :
      `cluster ${S.tiles.cluster[i]} · scene ${S.tiles.scenes[S.tiles.scene[i]].scene_id}`;
    box.append(thumb(id, 96), text);
    const chip = (tid, kind) => {
      const c = document.createElement("span");
      c.className = "chip " + kind; c.textContent = (kind === "pos" ? "+ " : "− ") + tid; c.title = "remove";
      c.onclick = () => { remove(tid); };
      ex.append(c);
    };
    S.positives.slice(1).forEach((tid) => chip(tid, "pos"));
    S.negatives.forEach((tid) => chip(tid, "neg"));
  }

  function remove(id) {
    S.positives = S.positives.filter((t) => t !== id);
    S.negatives = S.negatives.filter((t) => t !== id);
    showSelected(); search();
  }

  function clicked(i, mode, t0) {
    const id = S.tiles.ids[i];
    S.patch = null;
    if (mode === "positive" && S.positives.length) {
      if (!S.positives.includes(id)) S.positives.push(id);
      S.negatives = S.negatives.filter((t) => t !== id);
    } else if (mode === "negative" && S.positives.length) {
      if (!S.negatives.includes(id) && !S.positives.includes(id)) S.negatives.push(id);
    } else {
      S.positives = [id]; S.negatives = [];
    }
    showSelected();
    return search(t0);
  }

  // ------------------------------------------------------------------ URL hash

  function writeHash() {
    const p = params(), q = new URLSearchParams();
    if (S.positives.length) q.set("tile", S.positives.join("|"));
    if (S.negatives.length) q.set("neg", S.negatives.join("|"));
    q.set("k", p.k); q.set("r", p.exclude_radius_km); q.set("distinct", p.distinct ? 1 : 0);
    if (p.scenes) q.set("scenes", p.scenes.join("|"));
    if (p.bbox) q.set("bbox", p.bbox.join(","));
    q.set("view", [S.view.cx, S.view.cy, S.view.scale].map((v) => +v.toFixed(1)).join(","));
    const hash = "#" + q.toString();
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function readHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    const list = (key) => (q.get(key) ? q.get(key).split("|").filter(Boolean) : []);
    S.positives = list("tile"); S.negatives = list("neg"); S.patch = null;
    if (q.has("k")) $("k").value = q.get("k");
    if (q.has("r")) $("radius").value = q.get("r");
    if (q.has("distinct")) $("distinct").checked = q.get("distinct") === "1";
    const scenes = new Set(list("scenes"));
    [...$("scenes").options].forEach((o) => { o.selected = scenes.has(o.value); });
    $("bbox").value = q.get("bbox") || "";
    const view = (q.get("view") || "").split(",").map(Number);
    if (view.length === 3 && view.every(Number.isFinite) && view[2] > 0) {
      S.view = { cx: view[0], cy: view[1], scale: view[2] };
    }
    showSelected();
    if (S.positives.length) search(); else showResults(null);
  }

  // ------------------------------------------------------------------ legend

  function legend() {
    const ul = $("legend-list");
    ul.replaceChildren();
    const t = S.tiles, k = t.palette.length;
    const counts = new Array(k).fill(0);
    const first = new Array(k).fill(-1);
    for (let i = 0; i < t.n; i++) { const c = t.cluster[i]; if (c >= 0 && c < k) { counts[c]++; if (first[c] < 0) first[c] = i; } }
    const summary = new Map(((S.clusters && S.clusters.clusters) || []).map((c) => [c.cluster, c]));
    if (!k) { ul.textContent = "The store is not clustered yet (antssl cluster)."; return; }
    for (let c = 0; c < k; c++) {
      const info = summary.get(c) || {};
      const size = info.size !== undefined ? info.size : counts[c];
      const ex = (info.exemplars && info.exemplars[0]) || (first[c] >= 0 ? t.ids[first[c]] : null);
      const li = document.createElement("li");
      li.dataset.cluster = c; li.title = "click: show this cluster only";
      const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = t.palette[c];
      const label = document.createElement("span"); label.textContent = `cluster ${c} · ${size.toLocaleString()} tiles`;
      li.append(sw);
      if (ex) li.append(thumb(ex, 40));
      li.append(label);
      li.onclick = () => {
        S.focus = S.focus === c ? -1 : c;
        [...ul.children].forEach((el) => el.classList.toggle("focus", Number(el.dataset.cluster) === S.focus));
        redraw();
      };
      ul.append(li);
    }
  }

  // ------------------------------------------------------------------ events

  function bind() {
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, cx: S.view.cx, cy: S.view.cy, moved: false };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", (e) => {
      const r = canvas.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
      const [lon, lat] = toLonLat(wx(px), wy(py));
      const ew = lon >= 0 ? "E" : "W";
      $("coords").textContent = `${(-lat).toFixed(3)}°S ${Math.abs(lon).toFixed(3)}°${ew}  ` +
        `(EPSG:3031 x ${wx(px).toFixed(0)} m, y ${wy(py).toFixed(0)} m)`;
      if (drag) {
        const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
        if (drag.moved) { S.view.cx = drag.cx - dx * S.view.scale; S.view.cy = drag.cy + dy * S.view.scale; redraw(); }
      } else if (S.results.length) {
        setHot(resultAt(px, py), true);
      }
    });
    canvas.addEventListener("pointerup", (e) => {
      const d = drag; drag = null; canvas.classList.remove("dragging");
      if (!d) return;
      if (d.moved) { writeHash(); return; }
      const r = canvas.getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
      const i = pick(px, py);
      if (i < 0) return;
      const hit = resultAt(px, py);
      if (hit >= 0) setHot(hit, true);
      let mode = document.querySelector("input[name=mode]:checked").value;
      if (e.shiftKey) mode = "positive";
      if (e.altKey) mode = "negative";
      clicked(i, mode, e.timeStamp);
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = canvas.getBoundingClientRect();
      zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(e.deltaY * 0.0015));
    }, { passive: false });
    $("zoom-in").onclick = () => zoomAt(S.w / 2, S.h / 2, 0.5);
    $("zoom-out").onclick = () => zoomAt(S.w / 2, S.h / 2, 2);
    $("zoom-fit").onclick = () => { fit(); redraw(); writeHash(); };
    $("controls").addEventListener("submit", (e) => { e.preventDefault(); search(); });
    for (const id of ["k", "radius", "distinct", "scenes", "bbox"]) $(id).addEventListener("change", () => search());
    $("clear").onclick = () => { S.positives = []; S.negatives = []; S.patch = null; $("upload").value = ""; showSelected(); search(); };
    $("bbox-view").onclick = () => { $("bbox").value = viewBbox().map((v) => v.toFixed(3)).join(","); search(); };
    $("upload").addEventListener("change", async () => {
      const f = $("upload").files[0];
      if (!f) return;
      const tif = /\.tiff?$/i.test(f.name);
      S.patch = { name: f.name, data: await f.arrayBuffer(), type: tif ? "image/tiff" : "application/octet-stream" };
      S.positives = []; S.negatives = [];
      showSelected(); search();
    });
    window.addEventListener("resize", () => { resize(); redraw(); });
    window.addEventListener("hashchange", () => { readHash(); redraw(); });
  }

  function zoomAt(px, py, factor) {
    const x = wx(px), y = wy(py);
    S.view.scale = Math.min(Math.max(S.view.scale * factor, 0.5), 50000);
    S.view.cx = x - (px - S.w / 2) * S.view.scale;
    S.view.cy = y + (py - S.h / 2) * S.view.scale;
    redraw();
    clearTimeout(zoomAt.timer);
    zoomAt.timer = setTimeout(writeHash, 300);
  }

  function viewBbox() {
    // lon/lat bounds of the view: its edges sampled and inverse-projected (all longitudes and
    // down to 90°S when the pole is in view).
    let lon0 = 180, lon1 = -180, lat0 = 0, lat1 = -90;
    for (let s = 0; s <= 40; s++) {
      for (const [px, py] of [[s * S.w / 40, 0], [s * S.w / 40, S.h], [0, s * S.h / 40], [S.w, s * S.h / 40]]) {
        const [lon, lat] = toLonLat(wx(px), wy(py));
        lon0 = Math.min(lon0, lon); lon1 = Math.max(lon1, lon); lat0 = Math.min(lat0, lat); lat1 = Math.max(lat1, lat);
      }
    }
    if (wx(0) <= 0 && wx(S.w) >= 0 && wy(S.h) <= 0 && wy(0) >= 0) return [-180, -90, 180, lat1];
    return [lon0, lat0, lon1, lat1];
  }

  // ------------------------------------------------------------------ start

  S.screenOf = (id) => { const i = S.idIndex.get(id); return i === undefined ? null : { x: sx(S.tiles.x[i]), y: sy(S.tiles.y[i]) }; };
  S.search = search;
  S.redrawNow = draw;

  async function start() {
    resize();
    bind();
    draw();
    try {
      const [base, tiles] = await Promise.all([
        api("/v1/map/basemap").then((r) => r.json()),
        api("/v1/map/tiles").then((r) => r.json()),
      ]);
      S.clusters = await api("/v1/clusters").then((r) => r.json()).catch(() => null);
      buildBasemap(base);
      loadTiles(tiles);
      const sel = $("scenes");
      tiles.scenes.forEach((s) => sel.append(new Option(s.scene_id, s.scene_id)));
      fit();
      legend();
      $("status").textContent = `${tiles.n.toLocaleString()} tiles · ${tiles.scenes.length} scene(s)`;
      if (location.hash.length > 1) readHash(); else showSelected();
      draw();
    } catch (err) {
      $("status").textContent = "Cannot load the map: " + err.message;
      S.error = err.message;
    }
  }
  start();
})();
