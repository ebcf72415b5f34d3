// unmix serve: the page. Plain JavaScript, no libraries: everything comes from the app itself.
"use strict";

const $ = (id) => document.getElementById(id);
const HEADERS = { "X-Unmix-Request": "1" }; // the app refuses changes without it (other sites cannot add it)

const state = {
  options: null,      // GET /api/options
  jobs: new Map(),    // id -> job, from the server
  uploads: new Map(), // local id -> {name, loaded, total, error}: files on their way up
  received: new Map(),// id -> time its last update arrived (for the time left between updates)
  mine: new Set(),    // jobs added from this page: the first to finish opens the mixer
  mixer: null,
};

// ---------------------------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function clock(seconds) {
  seconds = Math.max(0, Math.floor(seconds || 0));
  const m = Math.floor(seconds / 60), s = seconds % 60;
  return `${m}:${String(s).padStart(2, "0")}`;
}

function timeLeft(seconds) {
  if (seconds < 1) return "almost done";
  if (seconds < 60) return `about ${Math.ceil(seconds)} s left`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  return `about ${m} min ${s} s left`;
}

function bytes(n) {
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? Number(n.toPrecision(3)) : n} ${units[i]}`;
}

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...HEADERS, ...(init.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function say(text) { $("message").textContent = text || ""; }

// --------------------------------------------------------------------------------- settings

function currentModel() {
  return state.options.models.find((m) => m.name === $("model").value) || state.options.models[0];
}

function settings() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  const targets = [...document.querySelectorAll("#targets input:checked")].map((i) => i.value);
  return { model: $("model").value, mode, targets, niter: $("niter").value, format: $("format").value };
}

function showTargets(chosen) {
  const model = currentModel();
  $("model-info").textContent = model.label;
  const box = $("targets");
  box.replaceChildren(...model.targets.map((t) => el("label", { class: "chip" },
    el("input", { type: "checkbox", value: t, checked: !chosen || chosen.includes(t), onchange: saveSettings }), t)));
  const karaoke = document.querySelector("input[name=mode][value=karaoke]");
  karaoke.disabled = !model.karaoke;
  $("karaoke-choice").title = model.karaoke ? `${state.options.karaoke.join(" and ")}` : "this model has no vocals";
  if (!model.karaoke && karaoke.checked) document.querySelector("input[name=mode][value=stems]").checked = true;
  box.classList.toggle("disabled", karaoke.checked);
}

async function loadSettings() {
  const [options, saved] = await Promise.all([api("/api/options"), api("/api/settings")]);
  state.options = options;
  $("model").replaceChildren(...options.models.map((m) => el("option", { value: m.name, title: m.label },
    m.cached ? m.name : `${m.name} (download on first use)`)));
  $("format").replaceChildren(...options.formats.map((f) => el("option", { value: f.id }, f.label)));
  const labels = ["0 · fastest", "1 · default", "2", "3 · slowest"];
  $("niter").replaceChildren(...Array.from({ length: options.niter.max + 1 },
    (_, i) => el("option", { value: i }, labels[i] || String(i))));
  const has = (select, value) => [...select.options].some((o) => o.value === String(value));
  $("model").value = has($("model"), saved.model) ? saved.model : options.default_model;
  $("format").value = has($("format"), saved.format) ? saved.format : options.default_format;
  $("niter").value = has($("niter"), saved.niter) ? saved.niter : options.niter.default;
  document.querySelector(`input[name=mode][value=${saved.mode === "karaoke" ? "karaoke" : "stems"}]`).checked = true;
  showTargets(saved.model === $("model").value ? saved.targets : null);
  $("accepts").textContent = `wav, flac, ogg, aiff, mp3, m4a, … up to ${bytes(options.max_upload)} each`;
}

let saveTimer = null;
function saveSettings() {
  $("targets").classList.toggle("disabled", settings().mode === "karaoke");
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => {
    const body = JSON.stringify(settings());
    api("/api/settings", { method: "PUT", body, headers: { "Content-Type": "application/json" } })
      .catch((e) => say(`settings not saved: ${e.message}`));
  }, 300);
}

// ---------------------------------------------------------------------------------- uploads

let uploadCount = 0;

function upload(file) {
  const local = `upload-${++uploadCount}`;
  const entry = { name: file.name, loaded: 0, total: file.size, error: null };
  state.uploads.set(local, entry);
  const s = settings();
  if (s.mode === "stems" && !s.targets.length) {
    entry.error = "choose at least one stem";
    return render();
  }
  if (file.size > state.options.max_upload) {
    entry.error = `${bytes(file.size)}: larger than this app's limit of ${bytes(state.options.max_upload)}`;
    return render();
  }
  const query = new URLSearchParams({ name: file.name, model: s.model, mode: s.mode, targets: s.targets.join(","),
    niter: s.niter, format: s.format });
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/jobs?${query}`);
  xhr.setRequestHeader("X-Unmix-Request", "1");
  xhr.upload.onprogress = (e) => { entry.loaded = e.loaded; render(); };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: keep the status */ }
    if (xhr.status === 201) {
      state.uploads.delete(local);
      state.mine.add(body.id);
      upsert(body);
    } else {
      entry.error = body.error || `upload failed (${xhr.status} ${xhr.statusText})`;
    }
    render();
  };
  xhr.onerror = () => { entry.error = "upload failed: the app did not answer"; render(); };
  xhr.send(file);
  render();
}

function addFiles(files) {
  say("");
  for (const file of files) upload(file);
}

function setupDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    addFiles(e.dataTransfer.files);
  });
  // a file dropped beside the zone must not make the browser leave the page to open it
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("files").addEventListener("change", (e) => {
    addFiles(e.target.files);
    e.target.value = "";
  });
}

// ------------------------------------------------------------------------------------ queue

function upsert(job) {
  const before = state.jobs.get(job.id);
  state.jobs.set(job.id, job);
  state.received.set(job.id, performance.now());
  if (job.state === "done" && (!before || before.state !== "done") && state.mine.has(job.id) && !state.mixer) {
    openMixer(job.id);
  }
  if (state.mixer && state.mixer.job.id === job.id && job.state !== "done") closeMixer();
}

function jobMeta(job, position) {
  const o = job.options || {};
  const what = o.mode === "karaoke" ? "karaoke" : `${(o.targets || []).length} stems`;
  const parts = [];
  if (job.state === "queued") parts.push(position === 0 ? "next" : `${position} ahead`);
  if (job.state === "running") {
    parts.push(job.stage || "running", `${Math.floor(job.progress * 100)}%`);
    if (job.eta !== undefined) {
      const since = (performance.now() - (state.received.get(job.id) || 0)) / 1000;
      parts.push(timeLeft(job.eta - since));
    }
  }
  if (job.state === "done") parts.push("100%");
  if (job.duration) parts.push(clock(job.duration));
  parts.push(o.model, what, o.format);
  return parts.filter(Boolean).join(" · ");
}

function deleteButton(job) {
  const button = el("button", { class: "plain delete", type: "button", title: "Delete this job and its files" },
    "Delete");
  let armed = null;
  button.addEventListener("click", async () => {
    if (!armed) { // a second click within 3 s deletes: results are not lost by a slip
      button.textContent = "Sure?";
      armed = setTimeout(() => { armed = null; button.textContent = "Delete"; }, 3000);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    try {
      await api(`/api/jobs/${job.id}`, { method: "DELETE" });
      removeJob(job.id);
    } catch (e) { say(`not deleted: ${e.message}`); button.disabled = false; }
  });
  return button;
}

const nodes = new Map(); // job id or upload id -> its list item, kept and updated in place

function jobNode(job) {
  const node = { bar: el("div"), meta: el("div", { class: "job-meta" }), error: el("div", { class: "job-error" }),
    badge: el("span", { class: "badge" }),
    open: el("button", { class: "open", type: "button", onclick: () => openMixer(job.id) }, "Mixer") };
  node.li = el("li", { class: "job", "data-id": job.id },
    el("div", { class: "job-head" }, el("span", { class: "job-name", title: job.name }, job.name), node.badge,
      node.open, deleteButton(job)),
    el("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 }, node.bar),
    node.meta, node.error);
  return node;
}

function updateJob(node, job, position) {
  const done = job.state === "done";
  const selected = Boolean(state.mixer && state.mixer.job.id === job.id);
  const percent = done ? 100 : job.state === "running" ? job.progress * 100 : job.state === "failed" ? 100 : 0;
  node.li.className = `job ${job.state}${selected ? " selected" : ""}`;
  node.li.dataset.state = job.state;
  node.badge.className = `badge ${job.state}`;
  node.badge.textContent = job.state;
  node.open.hidden = !done;
  node.bar.style.width = `${percent}%`;
  node.bar.parentElement.setAttribute("aria-valuenow", Math.round(percent));
  node.meta.textContent = jobMeta(job, position);
  node.error.textContent = job.error || "";
  node.error.hidden = !job.error;
}

function uploadNode(local, entry) {
  const node = { bar: el("div"), meta: el("div", { class: "job-meta" }), badge: el("span", { class: "badge" }),
    dismiss: el("button", { class: "plain", type: "button", onclick: () => { state.uploads.delete(local); render(); } },
      "Dismiss") };
  node.li = el("li", { class: "job uploading", "data-upload": local },
    el("div", { class: "job-head" }, el("span", { class: "job-name", title: entry.name }, entry.name), node.badge,
      node.dismiss),
    el("div", { class: "bar" }, node.bar), node.meta);
  return node;
}

function updateUpload(node, entry) {
  const failed = Boolean(entry.error);
  const percent = entry.total ? (100 * entry.loaded) / entry.total : 0;
  node.li.className = `job ${failed ? "failed" : "uploading"}`;
  node.badge.className = `badge ${failed ? "failed" : ""}`;
  node.badge.textContent = failed ? "refused" : "uploading";
  node.dismiss.hidden = !failed;
  node.bar.style.width = `${failed ? 100 : percent}%`;
  node.meta.className = failed ? "job-error" : "job-meta";
  node.meta.textContent = failed ? entry.error : `uploading ${Math.floor(percent)}% of ${bytes(entry.total)}`;
}

function render() {
  const jobs = [...state.jobs.values()].sort((a, b) => b.created - a.created);
  const queued = jobs.filter((j) => j.state === "queued").sort((a, b) => a.created - b.created).map((j) => j.id);
  const wanted = [];
  for (const [local, entry] of [...state.uploads.entries()].reverse()) {
    if (!nodes.has(local)) nodes.set(local, uploadNode(local, entry));
    updateUpload(nodes.get(local), entry);
    wanted.push(local);
  }
  for (const job of jobs) {
    if (!nodes.has(job.id)) nodes.set(job.id, jobNode(job));
    updateJob(nodes.get(job.id), job, queued.indexOf(job.id));
    wanted.push(job.id);
  }
  for (const key of [...nodes.keys()]) {
    if (!wanted.includes(key)) { nodes.get(key).li.remove(); nodes.delete(key); }
  }
  const list = $("jobs");
  wanted.forEach((key, i) => { // move only what is out of place: a node being clicked stays put
    const li = nodes.get(key).li;
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  $("empty").hidden = wanted.length > 0;
}

function removeJob(id) {
  state.jobs.delete(id);
  if (state.mixer && state.mixer.job.id === id) closeMixer();
  render();
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => { $("live").textContent = "live"; $("live").classList.add("on"); });
  events.addEventListener("error", () => { $("live").textContent = "reconnecting…"; $("live").classList.remove("on"); });
  events.addEventListener("jobs", (e) => { // at first, and after a reconnection
    state.jobs.clear();
    JSON.parse(e.data).forEach(upsert);
    if (state.mixer && !state.jobs.has(state.mixer.job.id)) closeMixer(); // deleted meanwhile
    render();
  });
  events.addEventListener("job", (e) => { upsert(JSON.parse(e.data)); render(); });
  events.addEventListener("deleted", (e) => removeJob(JSON.parse(e.data).id));
  setInterval(render, 1000); // the time left counts down between updates
}

// ------------------------------------------------------------------------------------ mixer

class Mixer {
  // Stems play in sync: one AudioBufferSourceNode per stem, all started at the same context time.
  constructor(job) {
    this.job = job;
    this.context = new AudioContext();
    this.stems = [];
    this.playing = false;
    this.offset = 0;     // seconds into the song while paused
    this.startedAt = 0;  // context time that corresponds to position 0 while playing
    this.duration = 0;
    this.sources = [];
  }

  async load(onProgress) {
    let loaded = 0;
    this.stems = await Promise.all(this.job.stems.map(async (stem) => {
      const response = await fetch(stem.url);
      if (!response.ok) throw new Error(`${stem.target}: ${response.status} ${response.statusText}`);
      const buffer = await this.context.decodeAudioData(await response.arrayBuffer());
      onProgress(++loaded, this.job.stems.length);
      const gain = this.context.createGain();
      gain.connect(this.context.destination);
      return { ...stem, buffer, gain, volume: 1, muted: false, solo: false };
    }));
    this.duration = Math.max(...this.stems.map((s) => s.buffer.duration));
  }

  position() {
    if (!this.playing) return this.offset;
    return Math.min(this.duration, this.context.currentTime - this.startedAt);
  }

  play() {
    if (this.playing) return;
    if (this.offset >= this.duration) this.offset = 0;
    this.context.resume();
    const when = this.context.currentTime + 0.05; // a little ahead, so that every stem starts on time
    this.sources = this.stems.map((stem) => {
      const source = this.context.createBufferSource();
      source.buffer = stem.buffer;
      source.connect(stem.gain);
      source.start(when, this.offset);
      return source;
    });
    this.startedAt = when - this.offset;
    this.playing = true;
  }

  pause() {
    if (!this.playing) return;
    this.offset = this.position();
    this.sources.forEach((s) => s.stop());
    this.sources = [];
    this.playing = false;
  }

  seek(seconds) {
    const wasPlaying = this.playing;
    this.pause();
    this.offset = Math.max(0, Math.min(seconds, this.duration));
    if (wasPlaying) this.play();
  }

  applyGains() {
    const anySolo = this.stems.some((s) => s.solo);
    for (const stem of this.stems) {
      const audible = !stem.muted && (!anySolo || stem.solo);
      stem.audible = audible;
      stem.gain.gain.setTargetAtTime(audible ? stem.volume : 0, this.context.currentTime, 0.01);
    }
  }

  close() {
    this.pause();
    this.context.close();
  }
}

function stemRow(mixer, stem) {
  const toggle = (kind, label, title) => el("button", { class: kind, type: "button", title, "aria-pressed": "false",
    "data-target": stem.target,
    onclick: (e) => {
      stem[kind === "mute" ? "muted" : "solo"] = !stem[kind === "mute" ? "muted" : "solo"];
      e.currentTarget.setAttribute("aria-pressed", String(stem[kind === "mute" ? "muted" : "solo"]));
      mixer.applyGains();
      markSilent(mixer);
    } }, label);
  return el("div", { class: "stem", "data-target": stem.target },
    el("span", { class: "stem-name" }, stem.target),
    toggle("mute", "M", `Mute ${stem.target}`),
    toggle("solo", "S", `Solo ${stem.target}`),
    el("input", { type: "range", min: 0, max: 150, value: 100, "aria-label": `${stem.target} volume`,
      oninput: (e) => { stem.volume = e.target.value / 100; mixer.applyGains(); } }),
    el("a", { href: stem.url, download: stem.download, title: `Download ${stem.download}` }, "Download"));
}

function markSilent(mixer) {
  for (const stem of mixer.stems) {
    const row = document.querySelector(`.stem[data-target="${CSS.escape(stem.target)}"]`);
    if (row) row.classList.toggle("silent", !stem.audible);
  }
}

async function openMixer(id) {
  const job = state.jobs.get(id);
  if (!job || job.state !== "done") return;
  if (state.mixer && state.mixer.job.id === id) return;
  closeMixer();
  const mixer = new Mixer(job);
  state.mixer = mixer;
  $("mixer").hidden = false;
  $("mixer-title").textContent = job.name;
  $("zip").href = job.zip;
  $("zip").setAttribute("download", "");
  $("spectrogram").src = job.spectrogram;
  $("stems").replaceChildren();
  $("play").disabled = true;
  $("seek").disabled = true;
  $("mixer-status").textContent = "loading the stems…";
  render();
  try {
    await mixer.load((n, total) => { $("mixer-status").textContent = `loading the stems… ${n} of ${total}`; });
  } catch (e) {
    $("mixer-status").textContent = `the stems could not be loaded: ${e.message}`;
    return;
  }
  if (state.mixer !== mixer) return; // another job was opened meanwhile
  mixer.applyGains();
  $("stems").replaceChildren(...mixer.stems.map((stem) => stemRow(mixer, stem)));
  $("mixer-status").textContent = `${mixer.stems.length} stems, ${clock(mixer.duration)}: mute (M), solo (S) and `
    + "set each stem's volume while it plays";
  $("play").disabled = false;
  $("seek").disabled = false;
  $("mixer").scrollIntoView({ behavior: "smooth", block: "nearest" });
  tick();
}

function closeMixer() {
  if (!state.mixer) return;
  state.mixer.close();
  state.mixer = null;
  $("mixer").hidden = true;
  showPlaying(false);
  render();
}

function showPlaying(playing) {
  $("play").textContent = playing ? "Pause" : "Play";
  $("play").setAttribute("aria-label", playing ? "Pause" : "Play");
  $("play").dataset.playing = String(playing);
}

let seeking = false;
function tick() {
  const mixer = state.mixer;
  if (!mixer) return;
  const position = mixer.position();
  if (mixer.playing && position >= mixer.duration) {
    mixer.pause();
    mixer.offset = 0;
  }
  showPlaying(mixer.playing);
  $("time").textContent = `${clock(mixer.position())} / ${clock(mixer.duration)}`;
  $("time").dataset.position = mixer.position().toFixed(2);
  if (!seeking) $("seek").value = mixer.duration ? Math.round((1000 * mixer.position()) / mixer.duration) : 0;
  requestAnimationFrame(tick);
}

function setupMixer() {
  $("play").addEventListener("click", () => {
    const mixer = state.mixer;
    if (!mixer) return;
    if (mixer.playing) mixer.pause(); else mixer.play();
    showPlaying(mixer.playing);
  });
  $("seek").addEventListener("input", () => { seeking = true; });
  $("seek").addEventListener("change", () => {
    seeking = false;
    if (state.mixer) state.mixer.seek((Number($("seek").value) / 1000) * state.mixer.duration);
  });
  $("close-mixer").addEventListener("click", closeMixer);
  document.addEventListener("keydown", (e) => { // space plays and pauses, unless typing in a field
    if (e.code === "Space" && state.mixer && !["INPUT", "SELECT", "BUTTON"].includes(e.target.tagName)) {
      e.preventDefault();
      $("play").click();
    }
  });
}

// ------------------------------------------------------------------------------------ start

async function main() {
  setupDrop();
  setupMixer();
  try {
    await loadSettings();
  } catch (e) {
    say(`the app did not answer: ${e.message}`);
    return;
  }
  $("model").addEventListener("change", () => { showTargets(null); saveSettings(); });
  $("niter").addEventListener("change", saveSettings);
  $("format").addEventListener("change", saveSettings);
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", saveSettings));
  listen();
  render();
}

main();
