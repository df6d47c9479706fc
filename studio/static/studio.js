// ardrag studio: the page side of the protocol in studio/PROTOCOL.md (v1).
// One WebSocket to /ws carries everything but the upload (a POST) and the downloads (links).
// Coordinates on the wire are model pixels with pixel centres at integers: CSS offset u on a canvas
// cw CSS px wide showing a W-pixel image is x = u / cw * W - 0.5 (same for y).
"use strict";

(() => {
  const CSS_WIDTH = 480; // both views: fixed CSS size, so mouse coordinates are stable
  const HIT_RADIUS = 12; // CSS px: a press this close to a marker redraws that point's drag
  const MIN_MOVE = 3; // CSS px: a press that moves less is a pin
  const MAX_LAG = 6; // frames: the view skips ahead rather than fall further behind the stream

  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("model"), message: $("message"), examples: $("examples"), upload: $("upload"),
    canvas: $("drag"), duration: $("duration"), durationValue: $("duration-value"),
    frame: $("frame"), frameView: $("frame-view"), placeholder: $("frame-placeholder"),
    frameIndex: $("frame-index"), points: $("points"), pointsCount: $("points-count"),
    prompt: $("prompt"), applyPrompt: $("apply-prompt"),
    play: $("play"), pause: $("pause"), step: $("step"), regenerate: $("regenerate"), reset: $("reset"),
    latency: $("status-latency"), fps: $("status-fps"), queue: $("status-queue"), total: $("status-frames"),
    mp4: $("download-mp4"), json: $("download-json"), ref: $("download-ref"), replay: $("replay"),
  };
  const ctx = el.canvas.getContext("2d");

  // What tests (and the curious, from the console) can read.
  const studio = {
    frames: [], // data URLs by frame index
    state: null, // the last `state` message
    points: [], // the last `points` message's points
    session: null,
    errors: [], // every error message received (socket errors and refused uploads)
    nextFrame: 0, // the last next_frame the server announced
    model: null,
    limits: null,
    image: null, // the last `image` message
  };
  window.studio = studio;

  let ws = null;
  let size = { w: 80, h: 48 }; // model pixels of the image on the canvas
  let css = { w: CSS_WIDTH, h: 288 };
  let reference = null; // the loaded reference image
  let serverPrompt = null; // the prompt the server last reported (the textarea follows its changes)
  let drawing = null; // the drag being drawn: {id, offset, path (CSS px), moved}
  let endedByServer = false; // a `full` error or a `closed` message explains the socket's end
  let fps = 16; // the model's frame rate
  let arrivalFps = 0; // the rate frames arrive at (the server's `fps`)
  let shown = -1; // frame index in view
  let target = -1; // newest frame to show
  let pump = null;

  // ---- messages on the page ----
  function showMessage(text, kind = "info") {
    el.message.textContent = text;
    el.message.className = text ? kind : "";
  }

  function reportError(text) {
    studio.errors.push(text);
    showMessage(text, "error");
  }

  // ---- the socket ----
  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reportError("Not connected to the server: reload the page.");
      return false;
    }
    if (el.message.className === "error") showMessage("");
    ws.send(JSON.stringify(msg));
    return true;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/ws`);
    ws.addEventListener("message", (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        reportError("The server sent a message the page cannot read.");
        return;
      }
      const handler = handlers[msg.type];
      if (handler) handler(msg);
    });
    ws.addEventListener("close", () => {
      setConnected(false);
      if (!endedByServer) showMessage("Disconnected from the server: reload the page to start again.", "error");
    });
  }

  const handlers = {
    ready(msg) {
      studio.session = msg.session;
      studio.model = msg.model;
      studio.limits = msg.limits;
      fps = msg.model.fps || fps;
      size = { w: msg.model.width, h: msg.model.height };
      el.model.textContent = `${msg.model.name} · ${msg.model.width}×${msg.model.height} · ${fps} fps`;
      const base = `/api/sessions/${encodeURIComponent(msg.session)}`;
      el.mp4.href = `${base}/video.mp4`;
      el.json.href = `${base}/trajectory.json`;
      el.ref.href = `${base}/reference.png`;
      buildExamples(msg.examples || []);
      setConnected(true);
      layout();
    },
    error(msg) {
      if (msg.code === "full") {
        endedByServer = true;
        studio.errors.push(msg.message);
        const text = /try again later/i.test(msg.message) ? msg.message : `${msg.message}: try again later`;
        showMessage(text.charAt(0).toUpperCase() + text.slice(1), "error");
      } else {
        reportError(msg.message);
      }
    },
    closed(msg) {
      endedByServer = true;
      showMessage(`Session closed: ${msg.reason}`, "error");
    },
    image(msg) {
      studio.image = msg;
      size = { w: msg.width, h: msg.height };
      const img = new Image();
      img.addEventListener("load", () => {
        if (studio.image === msg) {
          reference = img;
          redraw();
        }
      });
      img.src = msg.url;
      followPrompt(msg.prompt);
      for (const b of el.examples.querySelectorAll("button.example")) {
        b.classList.toggle("active", msg.source === b.dataset.name || msg.source === `example:${b.dataset.name}`);
      }
      layout();
    },
    points(msg) {
      studio.points = msg.points;
      studio.nextFrame = msg.next_frame;
      renderPoints();
      redraw();
    },
    queue(msg) {
      el.queue.textContent = msg.position > 0 ? `queue: ${msg.position} ahead` : "generating";
    },
    frames(msg) {
      const frames = studio.frames;
      msg.frames.forEach((b64, i) => {
        frames[msg.start + i] = `data:image/png;base64,${b64}`;
      });
      frames.length = msg.total;
      const n = msg.frames.length;
      const perFrame = n ? msg.latency_ms / n : msg.latency_ms;
      el.latency.textContent =
        `${Math.round(msg.latency_ms)} ms per step of ${n} frame${n === 1 ? "" : "s"} ` +
        `(${Math.round(perFrame)} ms per frame` +
        (msg.queue_wait_ms ? `, queued ${Math.round(msg.queue_wait_ms)} ms)` : ")");
      arrivalFps = Number(msg.fps) || 0;
      el.fps.textContent = msg.fps == null ? "–" : `${arrivalFps.toFixed(1)} frames/s`;
      el.total.textContent = String(msg.total);
      if (!(studio.state && studio.state.playing)) el.queue.textContent = "idle";
      if (msg.regenerated) shown = Math.min(shown, msg.start - 1);
      showUpTo(msg.total - 1);
    },
    state(msg) {
      studio.state = msg;
      studio.nextFrame = msg.next_frame;
      if (msg.frames === 0 && studio.frames.length) {
        studio.frames.length = 0; // a reset or a new image: the stream starts again
        shown = target = -1;
        showFrame(-1);
      }
      followPrompt(msg.prompt);
      el.replay.textContent = msg.replay || "";
      el.total.textContent = String(msg.frames);
      if (!msg.playing && el.queue.textContent === "generating") el.queue.textContent = "idle";
      setConnected(true);
    },
  };

  // ---- controls ----
  function setConnected(open) {
    const s = open ? studio.state : null;
    const hasImage = Boolean(s && s.has_image);
    el.upload.disabled = !open;
    el.applyPrompt.disabled = !open;
    for (const b of el.examples.querySelectorAll("button")) b.disabled = !open;
    el.play.disabled = !(hasImage && !s.playing);
    el.pause.disabled = !(s && s.playing);
    el.step.disabled = !(hasImage && !s.playing);
    el.regenerate.disabled = !(s && s.can_regenerate);
    el.reset.disabled = !hasImage;
    const canDownload = Boolean(open && s && s.frames > 0);
    for (const a of [el.mp4, el.json, el.ref]) {
      a.classList.toggle("disabled", !canDownload);
      a.setAttribute("aria-disabled", String(!canDownload));
    }
  }

  function followPrompt(text) {
    if (typeof text === "string" && text !== serverPrompt) {
      serverPrompt = text;
      el.prompt.value = text;
    }
  }

  function buildExamples(examples) {
    el.examples.replaceChildren();
    for (const ex of examples) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "example";
      b.dataset.name = ex.name;
      b.title = ex.prompt || ex.name;
      const img = document.createElement("img");
      img.src = ex.url;
      img.alt = ex.name;
      const name = document.createElement("span");
      name.textContent = ex.name;
      b.append(img, name);
      b.addEventListener("click", () => send({ type: "example", name: ex.name }));
      el.examples.append(b);
    }
  }

  for (const type of ["play", "pause", "step", "regenerate", "reset"]) {
    el[type].addEventListener("click", () => send({ type }));
  }
  el.applyPrompt.addEventListener("click", () => send({ type: "prompt", text: el.prompt.value }));

  const showDuration = () => {
    const n = Number(el.duration.value);
    el.durationValue.textContent = `${n} frame${n === 1 ? "" : "s"}`;
  };
  el.duration.addEventListener("input", showDuration);
  showDuration();

  el.upload.addEventListener("change", async () => {
    const file = el.upload.files[0];
    if (!file || !studio.session) return;
    showMessage(`uploading ${file.name}…`);
    try {
      // the file's name, for the server's log and the image's source (HTTP headers hold ASCII only)
      const headers = /^[\x20-\x7e]{1,80}$/.test(file.name) ? { "X-Filename": file.name } : {};
      const reply = await fetch(`/api/sessions/${encodeURIComponent(studio.session)}/image`, {
        method: "POST",
        headers,
        body: file,
      });
      let body;
      try {
        body = await reply.json();
      } catch {
        body = { ok: false, error: `The upload failed (HTTP ${reply.status}).` };
      }
      if (body.ok) showMessage("");
      else reportError(body.error || `The upload failed (HTTP ${reply.status}).`);
    } catch (err) {
      reportError(`The upload failed: ${err.message}`);
    } finally {
      el.upload.value = "";
    }
  });

  // ---- points list ----
  function renderPoints() {
    const points = studio.points;
    const max = studio.limits ? studio.limits.max_points : 8;
    el.pointsCount.textContent = `${points.length} / ${max}`;
    const ids = new Set(points.map((p) => String(p.id)));
    for (const row of el.points.querySelectorAll(".point-row")) {
      if (!ids.has(row.dataset.id)) row.remove();
    }
    const empty = el.points.querySelector(".empty");
    if (empty) empty.hidden = points.length > 0;
    for (const p of points) {
      let row = el.points.querySelector(`.point-row[data-id="${p.id}"]`);
      if (!row) {
        // a new row goes in id order; rows already there are never moved (that would end a slider's drag)
        row = pointRow(p.id);
        const later = [...el.points.querySelectorAll(".point-row")].find((r) => Number(r.dataset.id) > p.id);
        el.points.insertBefore(row, later || null);
      }
      row.querySelector(".swatch").style.background = p.color;
      row.querySelector(".pin").hidden = !p.pinned;
      const slider = row.querySelector("input.intensity");
      if (!slider.matches(":active")) slider.value = String(p.intensity); // not while it is being moved
      row.querySelector("output").textContent = Number(slider.value).toFixed(2);
    }
  }

  function pointRow(id) {
    const row = document.createElement("div");
    row.className = "point-row";
    row.dataset.id = String(id);
    row.innerHTML =
      '<span class="swatch"></span><span class="name"></span><span class="tag pin" hidden>pin</span>' +
      '<label class="intensity-label">intensity <input type="range" class="intensity" min="0" max="1" ' +
      'step="0.05"><output></output></label><button type="button" class="remove">remove</button>';
    row.querySelector(".name").textContent = `P${id}`;
    const slider = row.querySelector("input.intensity");
    slider.dataset.id = String(id);
    slider.setAttribute("aria-label", `intensity of P${id}`);
    slider.addEventListener("input", () => {
      row.querySelector("output").textContent = Number(slider.value).toFixed(2);
    });
    slider.addEventListener("change", () => send({ type: "intensity", id, value: Number(slider.value) }));
    const remove = row.querySelector("button.remove");
    remove.dataset.id = String(id);
    remove.title = `remove P${id}`;
    remove.addEventListener("click", () => send({ type: "remove", id }));
    return row;
  }

  // ---- the drag canvas ----
  function layout() {
    css = { w: CSS_WIDTH, h: Math.round((CSS_WIDTH * size.h) / size.w) };
    const dpr = window.devicePixelRatio || 1;
    el.canvas.style.width = `${css.w}px`;
    el.canvas.style.height = `${css.h}px`;
    el.canvas.width = Math.round(css.w * dpr);
    el.canvas.height = Math.round(css.h * dpr);
    for (const e of [el.frame, el.frameView, el.canvas.parentElement]) {
      e.style.width = `${css.w}px`;
      e.style.height = `${css.h}px`;
    }
    redraw();
  }

  const toModel = ([u, v]) => [(u / css.w) * size.w - 0.5, (v / css.h) * size.h - 0.5];
  const toCss = ([x, y]) => [((x + 0.5) * css.w) / size.w, ((y + 0.5) * css.h) / size.h];

  function mouseCss(event) {
    const r = el.canvas.getBoundingClientRect();
    return [event.clientX - r.left, event.clientY - r.top];
  }

  function redraw() {
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, css.w, css.h);
    if (reference) {
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(reference, 0, 0, css.w, css.h);
    } else {
      ctx.fillStyle = "#1d2330";
      ctx.fillRect(0, 0, css.w, css.h);
      ctx.fillStyle = "#8a93a6";
      ctx.font = "15px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText("pick an example or upload an image", css.w / 2, css.h / 2);
      ctx.textAlign = "start";
    }
    for (const p of studio.points) {
      const faded = drawing && drawing.id === p.id;
      ctx.globalAlpha = faded ? 0.35 : 1;
      drawPath(p.path.map(toCss), p.color, false);
      drawMarker(toCss([p.x, p.y]), p.color, p.pinned, `P${p.id}`);
    }
    ctx.globalAlpha = 1;
    if (drawing) {
      const p = studio.points.find((q) => q.id === drawing.id);
      const color = p ? p.color : "#ffffff";
      const path = drawing.path.map(([u, v]) => [u + drawing.offset[0], v + drawing.offset[1]]);
      drawPath(path, color, true);
      drawMarker(path[0], color, !drawing.moved, p ? `P${p.id}` : "new");
    }
  }

  function drawPath(path, color, live) {
    if (path.length < 2) return;
    ctx.lineJoin = ctx.lineCap = "round";
    ctx.setLineDash(live ? [6, 4] : []);
    ctx.beginPath();
    path.forEach(([u, v], i) => (i ? ctx.lineTo(u, v) : ctx.moveTo(u, v)));
    ctx.strokeStyle = "rgba(0, 0, 0, 0.55)";
    ctx.lineWidth = 5;
    ctx.stroke();
    ctx.strokeStyle = color;
    ctx.lineWidth = 2.5;
    ctx.stroke();
    ctx.setLineDash([]);
    // an arrowhead where the drag ends
    const [u1, v1] = path[path.length - 1];
    let k = path.length - 2;
    while (k > 0 && Math.hypot(u1 - path[k][0], v1 - path[k][1]) < 6) k -= 1;
    const a = Math.atan2(v1 - path[k][1], u1 - path[k][0]);
    ctx.beginPath();
    ctx.moveTo(u1, v1);
    ctx.lineTo(u1 - 10 * Math.cos(a - 0.45), v1 - 10 * Math.sin(a - 0.45));
    ctx.lineTo(u1 - 10 * Math.cos(a + 0.45), v1 - 10 * Math.sin(a + 0.45));
    ctx.closePath();
    ctx.fillStyle = color;
    ctx.fill();
  }

  function drawMarker([u, v], color, pinned, label) {
    ctx.lineWidth = 2;
    if (pinned) {
      // a pin: a hollow square with a dot, so it reads as "stays here"
      ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
      ctx.strokeRect(u - 7, v - 7, 14, 14);
      ctx.strokeStyle = color;
      ctx.strokeRect(u - 6, v - 6, 12, 12);
      ctx.beginPath();
      ctx.arc(u, v, 2, 0, 2 * Math.PI);
      ctx.fillStyle = color;
      ctx.fill();
    } else {
      ctx.beginPath();
      ctx.arc(u, v, 6, 0, 2 * Math.PI);
      ctx.fillStyle = color;
      ctx.fill();
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
    ctx.font = "bold 12px system-ui, sans-serif";
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
    ctx.strokeText(label, u + 10, v - 8);
    ctx.fillStyle = "#ffffff";
    ctx.fillText(label, u + 10, v - 8);
  }

  el.canvas.addEventListener("mousedown", (event) => {
    if (event.button !== 0 || !(studio.state && studio.state.has_image) || !ws) return;
    event.preventDefault();
    const press = mouseCss(event);
    let hit = null;
    let best = HIT_RADIUS;
    for (const p of studio.points) {
      const [u, v] = toCss([p.x, p.y]);
      const d = Math.hypot(u - press[0], v - press[1]);
      if (d <= best) [hit, best] = [p, d];
    }
    // Redrawing a point's drag grabs its marker: the path starts where the point is, not where the
    // press landed (up to HIT_RADIUS away), so the point does not jump.
    const offset = hit ? toCss([hit.x, hit.y]).map((c, i) => c - press[i]) : [0, 0];
    drawing = { id: hit ? hit.id : null, offset, path: [press], moved: false };
    redraw();
  });

  window.addEventListener("mousemove", (event) => {
    if (!drawing) return;
    const pos = mouseCss(event);
    const start = drawing.path[0];
    if (Math.hypot(pos[0] - start[0], pos[1] - start[1]) >= MIN_MOVE) drawing.moved = true;
    const last = drawing.path[drawing.path.length - 1];
    if (pos[0] !== last[0] || pos[1] !== last[1]) drawing.path.push(pos);
    redraw();
  });

  window.addEventListener("mouseup", (event) => {
    if (!drawing || event.button !== 0) return;
    const d = drawing;
    drawing = null;
    const cssPath = d.moved ? d.path : [d.path[0]];
    const round = (c) => Math.round(c * 1000) / 1000;
    const path = cssPath.map(([u, v]) => toModel([u + d.offset[0], v + d.offset[1]]).map(round));
    send({ type: "point", id: d.id, path, frames: Number(el.duration.value) });
    redraw();
  });

  // ---- the stream view: frames shown one by one at the model's rate (faster when they arrive faster),
  // never more than MAX_LAG behind the newest ----
  function showFrame(i) {
    const url = i >= 0 ? studio.frames[i] : undefined;
    if (url) {
      el.frame.src = url;
      el.frame.hidden = false;
      el.placeholder.hidden = true;
    } else if (i < 0) {
      el.frame.hidden = true;
      el.frame.removeAttribute("src");
      el.placeholder.hidden = false;
    }
    const total = studio.frames.length;
    el.frameIndex.textContent = i >= 0 ? `frame ${i} / ${total}` : `frame – / ${total}`;
  }

  function showUpTo(i) {
    target = i;
    if (shown > target) shown = target - 1; // a shorter stream (regenerated from an earlier frame)
    if (!pump) tick();
  }

  function tick() {
    pump = null;
    if (shown >= target) {
      showFrame(shown); // totals may have changed
      return;
    }
    shown = Math.max(shown + 1, target - MAX_LAG);
    showFrame(shown);
    pump = setTimeout(tick, 1000 / Math.max(fps, arrivalFps));
  }

  setConnected(false);
  layout();
  connect();
})();
