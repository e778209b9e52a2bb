// The study browser: plain ES module, no framework, no build step. It uses only the public API
// (QIDO-RS, WADO-RS rendered, the JSON series summary and preview) with the user's bearer token.
// On open it lists the most recent studies; each study links to the OHIF viewer whose base URL
// the page carries in <meta name="viewer-url">.

const TOKEN_KEY = "dicom-api-token";
const TAG = {
  PatientName: "00100010", PatientID: "00100020", PatientBirthDate: "00100030", PatientSex: "00100040",
  StudyInstanceUID: "0020000D", StudyDate: "00080020", StudyTime: "00080030", StudyDescription: "00081030",
  AccessionNumber: "00080050", ModalitiesInStudy: "00080061", NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208", SeriesInstanceUID: "0020000E", Modality: "00080060",
  SeriesNumber: "00200011", SeriesDescription: "0008103E", NumberOfSeriesRelatedInstances: "00201209",
  SOPInstanceUID: "00080018", SOPClassUID: "00080016", InstanceNumber: "00200013", Rows: "00280010",
  Columns: "00280011", NumberOfFrames: "00280008", BitsAllocated: "00280100",
  BodyPartExamined: "00180015", SliceThickness: "00180050", SliceLocation: "00201041",
  ImagePositionPatient: "00200032", PixelSpacing: "00280030", PhotometricInterpretation: "00280004",
  WindowCenter: "00281050", WindowWidth: "00281051", Manufacturer: "00080070",
};
// Shown in the viewer, in this order, when the instance results or metadata carry them.
const VIEWER_ATTRIBUTES = [
  "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyDescription",
  "AccessionNumber", "Modality", "SeriesNumber", "SeriesDescription", "InstanceNumber", "Rows",
  "Columns", "NumberOfFrames", "PhotometricInterpretation", "BitsAllocated", "PixelSpacing",
  "SliceThickness", "SliceLocation", "ImagePositionPatient", "WindowCenter", "WindowWidth",
  "BodyPartExamined", "Manufacturer", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID",
  "StudyInstanceUID",
];

const $ = (id) => document.getElementById(id);
const state = {
  instances: [], index: 0, study: "", series: "", loadSeq: 0, metadata: true, images: new Map(),
  // Searches: each has a generation; a newer one aborts the older's requests and its late answers
  // are dropped, so the message and the cards always come from the same (latest) search.
  searchSeq: 0, searchAbort: null,
};
const CACHED_IMAGES = 64;

// ---- API access -------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, accept = "application/json", signal = undefined) {
  const headers = { Accept: accept };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { headers, signal });
  if (response.status === 401 || response.status === 403) {
    throw new ApiError(response.status, "Not signed in or not allowed: give a valid token.");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { const body = await response.json(); message = body.error || body.message || message; } catch { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  return response;
}

async function apiJson(path, accept = "application/json", onResponse = null, signal = undefined) {
  const response = await api(path, accept, signal);
  onResponse?.(response);
  if (response.status === 204) return [];
  return response.json();
}

async function apiImage(path, signal = undefined) {
  const response = await api(path, "image/png", signal);
  return URL.createObjectURL(await response.blob());
}

const enc = encodeURIComponent;

// The OHIF viewer's page for a study: <viewer base>/viewer?StudyInstanceUIDs=<uid>; "" without a base.
export function viewerLink(base, studyUid) {
  if (!base || base.startsWith("{{")) return "";
  return `${base.replace(/\/+$/, "")}/viewer?StudyInstanceUIDs=${enc(studyUid)}`;
}

function viewerBase() { return document.querySelector('meta[name="viewer-url"]')?.content ?? ""; }

// ---- DICOM JSON helpers -------------------------------------------------------------------------

function values(result, keyword) {
  const element = result?.[TAG[keyword]];
  return element?.Value ?? [];
}

function text(result, keyword) {
  return values(result, keyword).map((v) => {
    if (v && typeof v === "object") return v.Alphabetic ?? v.Ideographic ?? JSON.stringify(v);
    return String(v);
  }).join("\\");
}

function formatName(name) { return name.replaceAll("^", " ").trim(); }

function formatDate(da) {
  return /^\d{8}$/.test(da) ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : da;
}

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// ---- Download link: the one place that knows where a series zip comes from ------------------------

// Time-limited links to the series' original zip(s), one per part.
export async function downloadLinks(study, series) {
  const answer = await apiJson(`/api/studies/${enc(study)}/series/${enc(series)}/download`);
  return (answer.parts ?? []).map((part) => ({ label: `${part.part_id}.zip`, href: part.url }));
}

// ---- Search and results -------------------------------------------------------------------------

export function searchQuery(form) {
  const params = new URLSearchParams();
  const name = form.name.trim();
  if (name) { params.set("PatientName", name); params.set("fuzzymatching", "true"); }
  if (form.pid.trim()) params.set("PatientID", form.pid.trim());
  const from = form.from.replaceAll("-", "");
  const to = form.to.replaceAll("-", "");
  if (from || to) params.set("StudyDate", from === to ? from : `${from}-${to}`);
  if (form.modality) params.set("ModalitiesInStudy", form.modality);
  params.set("limit", "50");
  return params;
}

async function search(event) {
  event?.preventDefault();
  state.searchAbort?.abort();
  const controller = new AbortController();
  state.searchAbort = controller;
  const generation = ++state.searchSeq;
  const current = () => generation === state.searchSeq;
  const { signal } = controller;
  const form = {
    name: $("patient-name").value, pid: $("patient-id").value, from: $("date-from").value,
    to: $("date-to").value, modality: $("modality").value,
  };
  const recent = !Object.values(form).some((value) => value.trim());
  const results = $("results");
  results.replaceChildren();
  results.dataset.state = "searching";
  say(recent ? "Loading the most recent studies…" : "Searching…");
  try {
    let more = false;
    const studies = await apiJson(`/dicomweb/studies?${searchQuery(form)}`, "application/dicom+json",
      (response) => { more = response.headers.has("Warning"); }, signal);
    if (!current()) return;
    const count = `${studies.length} stud${studies.length === 1 ? "y" : "ies"}`;
    let message = count;
    if (!studies.length) message = recent ? "No studies yet: send some (see the README)." : "No study matches.";
    else if (recent) message = more ? `The ${count} most recent (search to find others)` : `${count}, most recent first`;
    else if (more) message = `First ${count}: refine the search to see others.`;
    say(message);
    for (const study of studies) {
      const card = await studyCard(study, signal);
      if (!current()) return;
      results.append(card);
    }
    results.dataset.state = "done";
  } catch (error) {
    if (!current() || error.name === "AbortError") return;
    say(error.message);
    results.dataset.state = "failed";
  }
}

function say(message) { $("message").textContent = message; }

async function studyCard(study, signal) {
  const uid = text(study, "StudyInstanceUID");
  const title = element("h3", { text: `${formatName(text(study, "PatientName")) || "(no name)"} — ${text(study, "PatientID")}` });
  const link = viewerLink(viewerBase(), uid);
  if (link) {
    title.append(" ", element("a", {
      class: "open-viewer", href: link, target: "_blank", rel: "noopener", text: "Open in viewer",
    }));
  }
  const card = element("article", { class: "study", dataset: { study: uid } },
    title,
    element("div", {
      class: "meta",
      text: [formatDate(text(study, "StudyDate")), text(study, "StudyDescription"),
        text(study, "ModalitiesInStudy"), `${text(study, "NumberOfStudyRelatedSeries")} series`,
        `${text(study, "NumberOfStudyRelatedInstances")} instances`].filter(Boolean).join(" · "),
    }));
  const list = element("div", { class: "series-list" });
  card.append(list);
  try {
    const series = await apiJson(`/dicomweb/studies/${enc(uid)}/series`, "application/dicom+json", null, signal);
    series.sort((a, b) => Number(text(a, "SeriesNumber") || 0) - Number(text(b, "SeriesNumber") || 0));
    for (const s of series) list.append(seriesCard(uid, s, signal));
  } catch (error) {
    if (error.name === "AbortError") throw error;
    list.append(element("p", { text: error.message }));
  }
  return card;
}

function seriesCard(study, series, signal) {
  const uid = text(series, "SeriesInstanceUID");
  const img = element("img", { alt: "preview", class: "preview" });
  const open = element("button", { class: "thumb", type: "button", title: "Open the viewer" }, img);
  const status = element("dd", { class: "ingest-status", text: "…" });
  const download = element("dd", { class: "download", text: "…" });
  const card = element("div", { class: "series", dataset: { series: uid } },
    open,
    element("dl", {},
      element("dt", { text: "Modality" }), element("dd", { class: "modality", text: text(series, "Modality") }),
      element("dt", { text: "Series" }), element("dd", { text: text(series, "SeriesNumber") }),
      element("dt", { text: "Description" }), element("dd", { text: text(series, "SeriesDescription") }),
      element("dt", { text: "Instances" }),
      element("dd", { class: "instance-count", text: text(series, "NumberOfSeriesRelatedInstances") }),
      element("dt", { text: "Ingest" }), status,
      element("dt", { text: "Zip" }), download));
  open.addEventListener("click", () => openViewer(study, uid, series));
  apiImage(`/api/studies/${enc(study)}/series/${enc(uid)}/preview.png?size=170`, signal)
    .then((url) => { img.src = url; })
    .catch((error) => {
      if (error.name === "AbortError") return;
      img.replaceWith(element("span", { class: "no-preview", title: error.message, text: "no picture" }));
    });
  apiJson(`/api/studies/${enc(study)}/series/${enc(uid)}`, "application/json", null, signal)
    .then(async (summary) => {
      status.textContent = summary.ingest_status || "unknown";
      status.classList.add(summary.ingest_status === "indexed" ? "status-indexed" : "status-other");
      const links = await downloadLinks(study, uid);
      download.replaceChildren(...links.map((link) => element("a", { href: link.href, download: "", text: link.label })));
    })
    .catch((error) => {
      if (error.name === "AbortError") return;
      status.textContent = error.message;
      download.textContent = "";
    });
  return card;
}

// ---- Viewer ------------------------------------------------------------------------------------

async function openViewer(study, series, seriesResult) {
  state.study = study;
  state.series = series;
  state.instances = [];
  state.metadata = true;
  clearImages();
  $("viewer-title").textContent =
    `${text(seriesResult, "Modality")} series ${text(seriesResult, "SeriesNumber")} ${text(seriesResult, "SeriesDescription")}`;
  $("viewer").showModal();
  try {
    const instances = await apiJson(
      `/dicomweb/studies/${enc(study)}/series/${enc(series)}/instances?includefield=all&limit=1000`,
      "application/dicom+json");
    instances.sort((a, b) => (Number(text(a, "InstanceNumber")) || 0) - (Number(text(b, "InstanceNumber")) || 0));
    state.instances = instances;
    $("slider").max = String(Math.max(1, instances.length));
    await show(Math.floor((instances.length - 1) / 2));
  } catch (error) {
    $("position").textContent = error.message;
  }
}

async function show(index) {
  if (!state.instances.length) return;
  state.index = Math.min(Math.max(index, 0), state.instances.length - 1);
  const instance = state.instances[state.index];
  const sop = text(instance, "SOPInstanceUID");
  const seq = ++state.loadSeq;
  $("slider").value = String(state.index + 1);
  $("position").textContent = `${state.index + 1} / ${state.instances.length} (#${text(instance, "InstanceNumber")})`;
  const image = $("viewer-image");
  image.dataset.instanceNumber = text(instance, "InstanceNumber");
  image.dataset.sopInstanceUid = sop;
  showAttributes(instance);
  const base = instanceBase(sop);
  try {
    const url = await renderedImage(sop);
    if (seq !== state.loadSeq) return;
    image.src = url;
    image.alt = `instance ${text(instance, "InstanceNumber")}`;
    for (const next of [state.index + 1, state.index - 1]) {
      const neighbour = state.instances[next];
      if (neighbour) renderedImage(text(neighbour, "SOPInstanceUID")).catch(() => {});
    }
  } catch (error) {
    if (seq === state.loadSeq) image.alt = error.message;
  }
  if (state.metadata) {
    try {
      const [metadata] = await apiJson(`${base}/metadata`, "application/dicom+json");
      if (seq === state.loadSeq && metadata) showAttributes({ ...instance, ...metadata });
    } catch {
      state.metadata = false;  // WADO-RS metadata not offered: the QIDO attributes stay
    }
  }
}

function instanceBase(sop) {
  return `/dicomweb/studies/${enc(state.study)}/series/${enc(state.series)}/instances/${enc(sop)}`;
}

// Rendered images of the open series, by SOP Instance UID: a blob: URL promise each, the oldest
// dropped (and its URL revoked) past CACHED_IMAGES. Neighbours are fetched ahead of the keyboard.
function renderedImage(sop) {
  let entry = state.images.get(sop);
  if (!entry) {
    entry = apiImage(`${instanceBase(sop)}/rendered`);
    entry.catch(() => state.images.delete(sop));
    state.images.set(sop, entry);
    while (state.images.size > CACHED_IMAGES) {
      const [oldest, promise] = state.images.entries().next().value;
      state.images.delete(oldest);
      promise.then((url) => URL.revokeObjectURL(url), () => {});
    }
  }
  return entry;
}

function clearImages() {
  for (const promise of state.images.values()) promise.then((url) => URL.revokeObjectURL(url), () => {});
  state.images.clear();
}

function showAttributes(result) {
  const rows = VIEWER_ATTRIBUTES.filter((k) => values(result, k).length).map((keyword) => {
    let value = text(result, keyword);
    if (keyword === "PatientName") value = formatName(value);
    if (keyword.endsWith("Date")) value = formatDate(value);
    return element("tr", {}, element("th", { text: keyword }), element("td", { text: value }));
  });
  $("attributes").tBodies[0].replaceChildren(...rows);
}

function onKey(event) {
  // Inputs (the slider included) handle their own keys; the slider's changes arrive as "input".
  if (!$("viewer").open || event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
  const steps = { ArrowRight: 1, ArrowDown: 1, PageDown: 10, ArrowLeft: -1, ArrowUp: -1, PageUp: -10 };
  if (event.key in steps) show(state.index + steps[event.key]);
  else if (event.key === "Home") show(0);
  else if (event.key === "End") show(state.instances.length - 1);
  else return;
  event.preventDefault();
}

// ---- Sign-in -----------------------------------------------------------------------------------

// A hosted OIDC login (Cognito hosted UI, implicit flow) comes back to /ui#access_token=...
function tokenFromRedirect() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const received = hash.get("access_token") || hash.get("id_token");
  if (received) {
    localStorage.setItem(TOKEN_KEY, received);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function showSignIn() {
  $("signin-state").textContent = token() ? "Token set" : "No token (open API only)";
  $("token").value = "";
  const loginUrl = document.querySelector('meta[name="login-url"]')?.content ?? "";
  if (loginUrl && !loginUrl.startsWith("{{")) { $("login").href = loginUrl; $("login").hidden = false; }
}

function init() {
  tokenFromRedirect();
  showSignIn();
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim().replace(/^Bearer\s+/i, "");
    if (value) localStorage.setItem(TOKEN_KEY, value);
    showSignIn();
  });
  $("signout").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); showSignIn(); });
  $("search").addEventListener("submit", search);
  $("slider").addEventListener("input", (event) => show(Number(event.target.value) - 1));
  $("prev").addEventListener("click", () => show(state.index - 1));
  $("next").addEventListener("click", () => show(state.index + 1));
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("close", () => { state.loadSeq++; clearImages(); $("viewer-image").removeAttribute("src"); });
  document.addEventListener("keydown", onKey);
  document.body.dataset.ready = "true";
  search();  // the most recent studies, without a click
}

init();
