// manipseg web page: upload one photo to POST /v1/analyze and show heatmap, mask and score.
// All server text is inserted with textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { limits: null, photoUrl: null, busy: false };

function setStatus(text, busy) {
  $("status").textContent = text;
  $("status").classList.toggle("busy", Boolean(busy));
}

function showError(message) {
  $("error-message").textContent = message;
  $("error").hidden = false;
  $("result").hidden = true;
  setStatus("", false);
}

function formatBytes(n) {
  if (n >= 1024 * 1024) return (n / (1024 * 1024)).toFixed(1) + " MB";
  if (n >= 1024) return (n / 1024).toFixed(0) + " KB";
  return n + " bytes";
}

async function getJson(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(url + " answered " + resp.status);
  return resp.json();
}

async function loadConfig() {
  try {
    const [info, models] = await Promise.all([getJson("/v1/info"), getJson("/v1/models")]);
    state.limits = info.limits;
    $("limits").textContent = "JPEG, PNG, TIFF, BMP, GIF or WebP, up to " + formatBytes(info.limits.max_bytes) +
      " and " + Math.round(info.limits.max_pixels / 1e6) + " megapixels";
    const select = $("model");
    select.replaceChildren();
    for (const m of models.models) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = m.name + (m.default ? " (default)" : "") + (m.available ? "" : " (unavailable)");
      opt.disabled = !m.available;
      opt.dataset.summary = m.summary;
      opt.selected = m.default;
      select.append(opt);
    }
    showSummary();
  } catch (err) {
    showError("Cannot reach the analysis server (" + err.message + "). Reload the page to try again.");
  }
}

function showSummary() {
  const opt = $("model").selectedOptions[0];
  $("model-summary").textContent = opt ? opt.dataset.summary : "";
}

function baseName(name) {
  const stem = (name || "image").replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_");
  return stem || "image";
}

async function analyse(file) {
  if (!file || state.busy) return;
  $("error").hidden = true;
  if (state.limits && file.size > state.limits.max_bytes) {
    showError(file.name + " is " + formatBytes(file.size) + "; this server accepts at most " +
      formatBytes(state.limits.max_bytes) + ". Re-export the photo as JPEG or send a smaller copy.");
    return;
  }
  if (file.size === 0) {
    showError(file.name + " is empty (0 bytes).");
    return;
  }
  state.busy = true;
  $("file").disabled = true;
  setStatus("Analysing " + file.name + " (" + formatBytes(file.size) + ")…", true);
  const form = new FormData();
  form.append("image", file, file.name);
  if ($("model").value) form.append("model", $("model").value);
  let body = null;
  let resp = null;
  try {
    resp = await fetch("/v1/analyze", { method: "POST", body: form, headers: { Accept: "application/json" } });
    body = await resp.json().catch(() => null);
  } catch (err) {
    showError("The upload failed: " + err.message + ". Check the connection and try again.");
    return;
  } finally {
    state.busy = false;
    $("file").disabled = false;
    $("file").value = "";
  }
  if (!resp.ok || !body || body.error) {
    const msg = body && body.error ? body.error.message : "the server answered " + resp.status + ".";
    showError(msg);
    return;
  }
  showResult(file, body);
}

function showResult(file, r) {
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = URL.createObjectURL(file);
  // the slider cross-fades from the photo to the server's overlay (heatmap blended by probability)
  const photo = $("photo");
  const layer = $("overlay");
  layer.hidden = false;
  $("slider").hidden = false;
  photo.onerror = () => {  // the browser cannot show this format (e.g. TIFF): show the overlay alone
    photo.onerror = null;
    photo.src = r.overlay_png;
    layer.hidden = true;
    $("slider").hidden = true;
  };
  photo.src = state.photoUrl;
  layer.src = r.overlay_png;
  layer.style.opacity = $("opacity").value / 100;
  $("mask").src = r.mask_png;

  $("score").textContent = r.score.toFixed(2);
  const level = $("level");
  level.textContent = r.verdict && r.verdict !== "uncalibrated" ? r.verdict : r.level;
  level.className = "level " + r.level;
  $("reading").textContent = r.reading;
  $("used-model").textContent = r.model;
  $("seconds").textContent = r.seconds.toFixed(2) + " s";
  $("size").textContent = r.width + " × " + r.height + " px";
  $("flagged").textContent = (100 * r.flagged_fraction).toFixed(1) + " % of the photo (threshold " +
    r.threshold.toFixed(2) + ")";

  const stem = baseName(file.name);
  const links = { "dl-overlay": [r.overlay_png, ".overlay.png"], "dl-mask": [r.mask_png, ".mask.png"],
                  "dl-prob": [r.prob_png, ".prob.png"] };
  for (const [id, [url, suffix]] of Object.entries(links)) {
    $(id).href = url;
    $(id).download = stem + suffix;
  }
  $("result").hidden = false;
  setStatus("Done: " + file.name + " analysed by " + r.model + ".", false);
}

function setupDrop() {
  const zone = $("drop");
  $("file").addEventListener("change", (e) => analyse(e.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "dragend"]) {
    document.addEventListener(type, () => zone.classList.remove("over"));
  }
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) analyse(file);
  });
  $("opacity").addEventListener("input", (e) => { $("overlay").style.opacity = e.target.value / 100; });
  $("model").addEventListener("change", showSummary);
}

setupDrop();
loadConfig();
