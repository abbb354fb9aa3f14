// ditail web app: a thin client of the server's HTTP API (README.md, "The HTTP API").
// Plain ES2020, no framework, no build step. Sections: helpers · state · models ·
// variant editors · content and mask · settings form · jobs and events · output ·
// queue · gallery · start-up.
'use strict';

// ───────────────────────────── helpers ─────────────────────────────

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** Creates an element: el('a', {href, class, dataset, onclick, text}, ...children). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c);
  return e;
}

class ApiError extends Error {
  constructor(message, status = 0) { super(message); this.status = status; }
}

/** fetch() that returns the parsed JSON body and throws ApiError with the server's message. */
async function api(path, opts = {}) {
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(`cannot reach the server (${e.message})`);
  }
  // The server answers again: an error about reaching it is over.
  if ($('#error').dataset.kind === 'connection') clearError();
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!res.ok) throw new ApiError((body && body.error) || `${res.status} ${res.statusText}`, res.status);
  return body;
}
const post = (path) => api(path, { method: 'POST' });

/** The fields an error can name, by the words the server uses for them. */
const FIELD_WORDS = [['inversion negative prompt', '#inv-negative-prompt'], ['inversion prompt', '#inv-prompt'],
  ['negative prompt', '#negative-prompt'], ['inversion steps', '#inv-steps'], ['sampling steps', '#steps'],
  ['conv ratio', '#conv-ratio'], ['attn ratio', '#attn-ratio'], ['omega', '#omega'], ['alpha', '#alpha'],
  ['beta', '#beta'], ['size', '#size'], ['mask', '#mask']];

/** Marks the fields `msg` names (longer names first: "inversion steps" is not "steps"). */
function markFields(msg) {
  for (const e of $$('.invalid')) e.classList.remove('invalid');
  let rest = String(msg);
  for (const [words, sel] of FIELD_WORDS) {
    const re = new RegExp(`\\b${words}\\b`);
    if (re.test(rest) && $(sel)) {
      $(sel).classList.add('invalid');
      rest = rest.replace(new RegExp(re.source, 'g'), '');
    }
  }
}

/** Shows an error; `kind` 'connection' marks one that the next answer from the server clears. */
function showError(msg, kind = null) {
  $('#error-text').textContent = String(msg);
  $('#error').dataset.kind = kind || '';
  $('#error').hidden = false;
  markFields(msg);
}
function clearError() {
  $('#error').hidden = true;
  $('#error').dataset.kind = '';
  $('#error-text').textContent = '';
  markFields('');
}
/** Wraps an async handler so that failures land in the error area. */
const guard = (fn) => async (...args) => {
  try { return await fn(...args); } catch (e) { showError(e.message || e, e.status === 0 ? 'connection' : null); }
};

/** Seconds as "42 s" or "2 min 5 s" (rounded up first, so never "1 min 60 s"). */
function fmtSecs(s) {
  const t = Math.ceil(s);
  return t < 60 ? `${t} s` : `${Math.floor(t / 60)} min ${t % 60} s`;
}
const FINAL = new Set(['done', 'failed', 'cancelled']);
const LORA_SCALE = 0.7;

// ───────────────────────────── state ─────────────────────────────

const state = {
  catalog: { checkpoints: [], loras: [], vaes: [], embeddings: [] },
  promptField: null,   // the prompt textarea typed in last (where embedding chips go)
  byId: new Map(),     // catalog id → entry
  defaults: null,      // Settings from /api/defaults (null if unavailable)
  limits: {},
  content: null,       // {blob, name, url, width, height}
  jobs: new Map(),     // job id → view (see jobView)
  order: [],           // job ids in the server's queue order
  focus: null,         // the job shown in Output
  userFocus: false,    // whether a person picked it (else Output follows the running job)
  gallery: [],
  detail: null,        // the gallery entry in the detail dialog
};

// ───────────────────────────── models ─────────────────────────────

const entries = (kind) => ({ checkpoint: state.catalog.checkpoints, lora: state.catalog.loras, vae: state.catalog.vaes }[kind] || []);
const usableIds = (kind) => entries(kind).filter((e) => e.usable).map((e) => e.id);
const isUsable = (id) => !!(state.byId.get(id) || {}).usable;

async function loadModels(rescan = false) {
  const cat = rescan ? await post('/api/models/rescan') : await api('/api/models');
  state.catalog = { checkpoints: cat.checkpoints || [], loras: cat.loras || [], vaes: cat.vaes || [], embeddings: cat.embeddings || [] };
  state.byId = new Map([...state.catalog.checkpoints, ...state.catalog.loras, ...state.catalog.vaes].map((e) => [e.id, e]));
  refreshPickers();
}

/** A few words of why an entry is unusable (the whole reason goes in its tooltip): the
 * loader's messages carry paths and a conversion command, too long for a picker. */
function shortReason(reason) {
  const r = reason || 'unknown reason';
  if (/pickle/i.test(r)) return 'a PyTorch pickle: convert it to .safetensors (details in the tooltip)';
  const arch = /unsupported architecture: ([^(:,]+)/.exec(r);
  if (arch) return `${arch[1].trim()}: not an architecture ditail runs`;
  const plain = r.replace(/(?:\/[^\s:,]+)+/g, '…').replace(/\s+/g, ' ').trim();
  return plain.length > 70 ? `${plain.slice(0, 67)}…` : plain;
}

/** Fills a model select (data-kind) keeping `prefer` (default: its value) if still usable. */
function fillSelect(sel, kind = sel.dataset.kind, prefer = sel.value) {
  sel.replaceChildren();
  if (kind === 'vae') sel.append(el('option', { value: '' }, "model's own VAE"));
  if (kind !== 'vae' && !entries(kind).length) {
    sel.append(el('option', { value: '', disabled: true }, kind === 'lora' ? 'no LoRAs found' : 'no checkpoints found'));
  }
  for (const e of entries(kind)) {
    const text = e.usable ? e.name : `${e.name} — unusable: ${shortReason(e.reason)}`;
    sel.append(el('option', { value: e.id, disabled: !e.usable, class: e.usable ? null : 'unusable', title: e.usable ? e.path : e.reason || '' }, text));
  }
  const ok = [...sel.options].find((o) => o.value === prefer && !o.disabled);
  const first = [...sel.options].find((o) => !o.disabled);
  sel.value = ok ? prefer : first ? first.value : '';
  sel.title = (sel.selectedOptions[0] || {}).title || '';
}

/** After a (re)load of the catalog: every picker, chip row and the cocktail list. */
function refreshPickers() {
  for (const sel of $$('select[data-kind]')) fillSelect(sel);
  for (const b of $$('.add-lora')) updateLoraButton(b);
  for (const row of $$('.lora')) renderChips(row);
  renderCocktailModels();
  renderEmbeddings();
}

// ───────────────────────────── embeddings ─────────────────────────────
// Textual-inversion embeddings are named in prompts (A1111's way: the file name). Chips
// list them; typing the start of a name in a prompt offers the names that fit.

const PROMPT_FIELDS = ['#prompt', '#negative-prompt', '#inv-prompt', '#inv-negative-prompt', '#content-prompt'];

/** The family of the first selected model, to mark embeddings of the other one. */
function currentFamily() {
  const sel = $('select.model') || $('select[data-kind=checkpoint]');
  const e = sel && state.byId.get(sel.value);
  return e ? e.architecture : null;
}

const usableEmbeddings = () => state.catalog.embeddings.filter((e) => e.usable);

function renderEmbeddings() {
  const list = usableEmbeddings();
  $('#embeddings-box').hidden = !list.length;
  const fam = currentFamily();
  $('#embeddings').replaceChildren(...list.map((e) => el('button', {
    type: 'button', class: `chip${fam && e.architecture !== fam ? ' other-family' : ''}`,
    title: `${e.architecture} embedding: add it to the prompt${fam && e.architecture !== fam ? ` (the selected model is ${fam}: it would be refused)` : ''}`,
    onclick: () => insertEmbedding(e.name),
  }, e.name)));
}

function insertEmbedding(name) {
  const f = state.promptField || $('#negative-prompt');
  const cur = f.value.trim();
  f.value = cur ? `${name}, ${cur}` : name;
  f.focus();
}

/** The word being typed before the caret (letters, digits, `_-.`, after `embedding:`). */
function wordAtCaret(f) {
  const before = f.value.slice(0, f.selectionStart);
  const m = /(?:embedding:)?([\p{L}\p{N}_.-]+)$/u.exec(before);
  return m ? { start: before.length - m[0].length, end: f.selectionStart, text: m[1], full: m[0] } : null;
}

function hideSuggest() {
  const box = $('#suggest');
  box.hidden = true;
  box.replaceChildren();
  box.field = null;
}

function showSuggest(f) {
  const w = wordAtCaret(f);
  const low = w && w.text.toLowerCase();
  const hits = w && w.text.length >= 2
    ? usableEmbeddings().filter((e) => e.name.toLowerCase().startsWith(low) && e.name.toLowerCase() !== low).slice(0, 8)
    : [];
  if (!hits.length) { hideSuggest(); return; }
  const box = $('#suggest');
  const pick = (name) => {
    const keep = w.full.startsWith('embedding:') ? 'embedding:' : '';
    f.value = f.value.slice(0, w.start) + keep + name + f.value.slice(w.end);
    const at = w.start + keep.length + name.length;
    f.setSelectionRange(at, at);
    hideSuggest();
    f.focus();
  };
  box.replaceChildren(...hits.map((e, i) => el('button', {
    type: 'button', role: 'option', class: i === 0 ? 'active' : null, title: `${e.architecture} embedding`,
    onmousedown: (ev) => { ev.preventDefault(); pick(e.name); },
  }, e.name)));
  box.pick = pick;
  box.field = f;
  const r = f.getBoundingClientRect();
  box.style.left = `${r.left + window.scrollX}px`;
  box.style.top = `${r.bottom + window.scrollY + 2}px`;
  box.hidden = false;
}

function moveSuggest(by) {
  const items = $$('#suggest button');
  const i = items.findIndex((b) => b.classList.contains('active'));
  items.forEach((b) => b.classList.remove('active'));
  items[(i + by + items.length) % items.length].classList.add('active');
}

function initEmbeddings() {
  for (const sel of PROMPT_FIELDS) {
    const f = $(sel);
    if (!f) continue;
    f.addEventListener('focus', () => { state.promptField = f; });
    f.addEventListener('input', () => showSuggest(f));
    f.addEventListener('blur', () => setTimeout(() => { if ($('#suggest').field === f) hideSuggest(); }, 150));
    f.addEventListener('keydown', (ev) => {
      const box = $('#suggest');
      if (box.hidden || box.field !== f) return;
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') { ev.preventDefault(); moveSuggest(ev.key === 'ArrowDown' ? 1 : -1); }
      else if (ev.key === 'Enter' || ev.key === 'Tab') { ev.preventDefault(); box.pick($('#suggest button.active').textContent); }
      else if (ev.key === 'Escape') hideSuggest();
    });
  }
  document.addEventListener('change', (ev) => { if (ev.target.matches('select.model, select[data-kind=checkpoint]')) renderEmbeddings(); });
}

// ───────────────────────────── variant editors ─────────────────────────────
// A Variant = model + LoRAs (scale, trigger chips) + VAE + clip skip.

function variantEditor({ modelSelect = true, onRemove = null } = {}) {
  const root = $('#variant-template').content.firstElementChild.cloneNode(true);
  const model = $('.model', root);
  if (modelSelect) {
    fillSelect(model);
    model.addEventListener('change', () => {
      model.title = (model.selectedOptions[0] || {}).title || '';
      followFamilySize(model.value);
    });
  } else {
    // No model to pick (cocktail rows): the remove button moves to the last line.
    $('.variant-foot', root).append($('.remove', root));
    $('.variant-head', root).remove();
  }
  const remove = $('.remove', root);
  if (onRemove) remove.addEventListener('click', () => onRemove(root));
  else remove.remove();
  fillSelect($('.vae', root));
  $('.clip-skip', root).value = defaultClipSkip();
  $('.add-lora', root).addEventListener('click', () => addLora(root));
  updateLoraButton($('.add-lora', root));
  return root;
}

/** SDXL works at 1024 px, SD1.x at 512: picking a model of the other family moves the
 *  size field between the two defaults (a size the user typed is left alone). */
function followFamilySize(id) {
  const e = state.byId && state.byId.get(id);
  const size = $('#size');
  if (!e || !size) return;
  const want = e.architecture === 'SDXL' ? '1024' : '512';
  if (size.value === '512' || size.value === '1024' || size.value === '') size.value = want;
}

function updateLoraButton(b) {
  b.disabled = !usableIds('lora').length;
  b.title = b.disabled ? 'no usable LoRAs in the --models folders' : 'add a LoRA';
}

function defaultClipSkip() {
  const t = state.defaults && state.defaults.targets && state.defaults.targets[0];
  return (t && t.clip_skip) || 1;
}

function addLora(variant, lora = null) {
  const max = state.limits.max_loras;
  if (max && $$('.lora', variant).length >= max) return showError(`at most ${max} LoRAs per model`);
  const row = $('#lora-template').content.firstElementChild.cloneNode(true);
  const sel = $('.lora-id', row);
  const scale = $('.lora-scale', row);
  const out = $('.lora-scale-out', row);
  fillSelect(sel, 'lora', lora ? lora.id : '');
  scale.value = lora && lora.scale != null ? lora.scale : LORA_SCALE;
  const showScale = () => { out.textContent = Number(scale.value).toFixed(2); };
  showScale();
  scale.addEventListener('input', showScale);
  sel.addEventListener('change', () => renderChips(row));
  $('.remove-lora', row).addEventListener('click', () => row.remove());
  $('.loras', variant).append(row);
  renderChips(row);
}

/** The selected LoRA's trigger words as chips that prepend the word to the prompt. */
function renderChips(row) {
  const entry = state.byId.get($('.lora-id', row).value);
  const words = (entry && entry.triggers) || [];
  $('.chips', row).replaceChildren(...words.map((w) =>
    el('button', { type: 'button', class: 'chip', title: 'insert at the start of the prompt', onclick: () => insertTrigger(w) }, w)));
}

function insertTrigger(word) {
  const p = $('#prompt');
  const cur = p.value.trim();
  if (!cur.split(',').map((s) => s.trim()).includes(word)) p.value = cur ? `${word}, ${cur}` : word;
  p.focus();
}

function readVariant(root, model = null) {
  return {
    model: model || $('.model', root).value,
    loras: $$('.lora', root)
      .filter((r) => $('.lora-id', r).value)
      .map((r) => ({ id: $('.lora-id', r).value, scale: Number($('.lora-scale', r).value) })),
    vae: $('.vae', root).value || null,
    clip_skip: Number($('.clip-skip', root).value) || 1,
  };
}

/** Fills an editor from a Variant; returns the ids it names that the catalog cannot offer. */
function writeVariant(root, v) {
  const missing = [v.model, v.vae, ...(v.loras || []).map((l) => l.id)].filter((id) => id && !isUsable(id));
  const model = $('.model', root);
  if (model && v.model) fillSelect(model, 'checkpoint', v.model);
  $$('.lora', root).forEach((r) => r.remove());
  for (const l of v.loras || []) if (isUsable(l.id)) addLora(root, l);
  fillSelect($('.vae', root), 'vae', v.vae || '');
  $('.clip-skip', root).value = v.clip_skip || 1;
  return missing;
}

// Transfer: one source editor (#source) and a list of target editors (.target-model).

let sourceEditor = null;

function initTransfer() {
  sourceEditor = variantEditor();
  $('.model', sourceEditor).id = 'source';
  $('.model', sourceEditor).setAttribute('aria-label', 'Source model');
  $('#source-box').append(sourceEditor);
  addTarget();
}

function addTarget(v = null) {
  const n = $$('#targets .variant').length;
  const max = state.limits.max_models;
  if (max && n >= max) return [];
  const ed = variantEditor({ onRemove: (root) => { root.remove(); updateTargetButtons(); } });
  $('.model', ed).classList.add('target-model');
  $('.model', ed).setAttribute('aria-label', `Target model ${n + 1}`);
  $('#targets').append(ed);
  let missing = [];
  if (v) missing = writeVariant(ed, v);
  else {
    // By default each new target is another model than the source's, if there is one.
    const ids = usableIds('checkpoint');
    if (ids.length) fillSelect($('.model', ed), 'checkpoint', ids[(n + 1) % ids.length]);
  }
  updateTargetButtons();
  return missing;
}

function updateTargetButtons() {
  const eds = $$('#targets .variant');
  for (const ed of eds) { const r = $('.remove', ed); if (r) r.hidden = eds.length < 2; }
  const max = state.limits.max_models;
  $('#add-target').disabled = !!max && eds.length >= max;
}

// Cocktail: one row per checkpoint (checkbox .cocktail-model); a checked row holds one or
// more variant editors of that model (e.g. the same model with different LoRAs).

function renderCocktailModels() {
  const box = $('#cocktail-models');
  const rows = new Map($$('.cocktail-row', box).map((r) => [r.dataset.id, r]));
  const items = state.catalog.checkpoints.map((e) => {
    const row = rows.get(e.id) || cocktailRow(e);
    rows.delete(e.id);
    const cb = $('.cocktail-model', row);
    cb.disabled = !e.usable;
    if (!e.usable && cb.checked) toggleCocktail(row, false);
    row.classList.toggle('unusable', !e.usable);
    row.title = e.usable ? e.path : e.reason || '';
    $('.name', row).textContent = e.name;
    $('.reason', row).textContent = e.usable ? '' : `unusable: ${shortReason(e.reason)}`;
    return row;
  });
  box.replaceChildren(...items);
  if (!items.length) box.append(el('p', { class: 'muted small' }, 'No checkpoints found: put models in a --models folder and press Rescan.'));
}

function cocktailRow(e) {
  const cb = el('input', { type: 'checkbox', class: 'cocktail-model', value: e.id });
  const row = el('div', { class: 'cocktail-row', dataset: { id: e.id } },
    el('label', { class: 'cocktail-label' }, cb, el('span', { class: 'name' }), el('span', { class: 'reason small' })),
    el('div', { class: 'cocktail-variants', hidden: true }),
    el('button', { type: 'button', class: 'ghost small add-variant', hidden: true }, '+ another variant of this model'));
  cb.addEventListener('change', () => toggleCocktail(row, cb.checked));
  $('.add-variant', row).addEventListener('click', () => addCocktailVariant(row));
  return row;
}

function toggleCocktail(row, on, variants = [null]) {
  $('.cocktail-model', row).checked = on;
  const list = $('.cocktail-variants', row);
  list.replaceChildren();
  let missing = [];
  if (on) for (const v of variants) missing = missing.concat(addCocktailVariant(row, v));
  list.hidden = !on;
  $('.add-variant', row).hidden = !on;
  return missing;
}

function addCocktailVariant(row, v = null) {
  const ed = variantEditor({ modelSelect: false, onRemove: (root) => { root.remove(); updateVariantButtons(row); } });
  $('.cocktail-variants', row).append(ed);
  updateVariantButtons(row);
  return v ? writeVariant(ed, v) : [];
}

/** A row's only variant goes with its checkbox, so it has no remove button. */
function updateVariantButtons(row) {
  const eds = $$('.variant', row);
  for (const ed of eds) $('.remove', ed).hidden = eds.length < 2;
}

function readCocktail() {
  return $$('.cocktail-row')
    .filter((row) => $('.cocktail-model', row).checked)
    .flatMap((row) => $$('.variant', row).map((ed) => readVariant(ed, row.dataset.id)));
}

/** Checks the models of `variants` (with their LoRAs); returns ids the catalog lacks. */
function setCocktail(variants) {
  for (const row of $$('.cocktail-row')) toggleCocktail(row, false);
  let missing = [];
  const byModel = new Map();
  for (const v of variants) {
    if (!isUsable(v.model)) { missing.push(v.model); continue; }
    byModel.set(v.model, (byModel.get(v.model) || []).concat([v]));
  }
  for (const [id, vs] of byModel) {
    const row = $$('.cocktail-row').find((r) => r.dataset.id === id);
    if (row) missing = missing.concat(toggleCocktail(row, true, vs));
  }
  return missing;
}

const mode = () => ($('#mode-cocktail').checked ? 'cocktail' : 'transfer');
function setMode(m) {
  $(`#mode-${m}`).checked = true;
  applyMode();
}
function applyMode() {
  $('#transfer-box').hidden = mode() !== 'transfer';
  $('#cocktail-box').hidden = mode() !== 'cocktail';
}

// ───────────────────────────── content and mask ─────────────────────────────

const fromPrompt = () => $('#content-from-prompt').checked;

function setContent(blob, name) {
  if (blob.type && !blob.type.startsWith('image/')) return showError(`${name}: not an image`);
  if (state.content) URL.revokeObjectURL(state.content.url);
  const url = URL.createObjectURL(blob);
  state.content = { blob, name: name || 'content.png', url, width: 0, height: 0 };
  const img = $('#content-preview');
  // Settles when the image is shown (and the mask canvas has its size).
  const shown = new Promise((ok) => {
    img.onload = () => {
      state.content.width = img.naturalWidth;
      state.content.height = img.naturalHeight;
      $('#content-name').textContent = `${state.content.name} · ${img.naturalWidth}×${img.naturalHeight}`;
      resetMask();
      ok();
    };
    img.onerror = () => {
      showError(`${state.content.name}: the browser cannot decode this image`);
      ok();
    };
  });
  img.src = url;
  $('#content-from-prompt').checked = false;
  applyContentMode();
  return shown;
}

function applyContentMode() {
  const gen = fromPrompt();
  $('#content-prompt-box').hidden = !gen;
  const zone = $('#drop-zone');
  zone.classList.toggle('generated', gen);
  zone.classList.toggle('empty', !gen && !state.content);
  $('#content-preview').hidden = gen || !state.content;
  resetMask();
}

function initContent() {
  const zone = $('#drop-zone');
  $('#content-file').addEventListener('change', (ev) => {
    const f = ev.target.files[0];
    if (f) setContent(f, f.name);
  });
  // Without an image the zone itself opens the file chooser (click, Enter or Space).
  const choose = (ev) => { if (!state.content && !fromPrompt() && ev.target !== $('#mask-canvas')) $('#content-file').click(); };
  zone.addEventListener('click', choose);
  zone.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); choose(ev); } });
  zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', guard(async (ev) => {
    ev.preventDefault();
    zone.classList.remove('over');
    const f = ev.dataTransfer.files[0];
    if (f) return setContent(f, f.name);
    // An image dragged from this page (the gallery, the results) arrives as a URL.
    const url = (ev.dataTransfer.getData('text/uri-list') || '').split('\n')[0].trim();
    if (url) await contentFromUrl(url, url.split('/').pop());
  }));
  document.addEventListener('paste', (ev) => {
    const item = [...((ev.clipboardData && ev.clipboardData.items) || [])].find((i) => i.type.startsWith('image/'));
    if (!item) return;
    ev.preventDefault();
    setContent(item.getAsFile(), `pasted.${item.type.split('/')[1] || 'png'}`);
  });
  $('#content-from-prompt').addEventListener('change', applyContentMode);
}

async function contentFromUrl(url, name) {
  const res = await fetch(url);
  if (!res.ok) throw new ApiError(`${name}: ${res.status} ${res.statusText}`);
  await setContent(await res.blob(), name);
}

/** Paints the mask canvas from a mask PNG (gray: white = inject), scaled to the canvas. */
async function maskFromUrl(url) {
  const res = await fetch(url);
  if (!res.ok) throw new ApiError(`the painted mask: ${res.status} ${res.statusText}`);
  const bitmap = await createImageBitmap(await res.blob());
  $('#mask').value = 'painted';
  resetMask();
  const c = $('#mask-canvas');
  const scratch = el('canvas', { width: c.width, height: c.height }).getContext('2d');
  scratch.drawImage(bitmap, 0, 0, c.width, c.height);
  const gray = scratch.getImageData(0, 0, c.width, c.height).data;
  const ctx = c.getContext('2d');
  const paint = ctx.createImageData(c.width, c.height);
  for (let i = 0; i < c.width * c.height; i++) paint.data.set([255, 61, 139, gray[i * 4]], i * 4);
  ctx.putImageData(paint, 0, 0);
}

// The mask canvas lies over the content preview. Paint is kept in the alpha channel
// (shown tinted); the exported PNG is its alpha as gray: painted = white = inject.

const MASK_MAX = 512;

function resetMask() {
  const c = $('#mask-canvas');
  const painted = $('#mask').value === 'painted';
  const w0 = (!fromPrompt() && state.content && state.content.width) || 512;
  const h0 = (!fromPrompt() && state.content && state.content.height) || 512;
  const k = Math.min(1, MASK_MAX / Math.max(w0, h0));
  c.width = Math.max(1, Math.round(w0 * k));
  c.height = Math.max(1, Math.round(h0 * k));
  c.hidden = !painted;
  $('#mask-tools').hidden = !painted;
  $('#mask-help').hidden = !painted;
  // Without a content image the canvas gets a blank stage of its own.
  // The stage keeps the image's aspect (small images scale up); without a content
  // image a painted mask gets a blank square of its own.
  const blank = painted && (fromPrompt() || !state.content);
  const stage = $('#stage');
  stage.classList.toggle('blank', blank);
  stage.hidden = !blank && (fromPrompt() || !state.content || !state.content.width);
  stage.style.setProperty('--ar', String(w0 / h0));
}

function initMask() {
  const c = $('#mask-canvas');
  const ctx = c.getContext('2d', { willReadFrequently: true });
  let last = null;
  const pos = (ev) => {
    const r = c.getBoundingClientRect();
    return [((ev.clientX - r.left) * c.width) / r.width, ((ev.clientY - r.top) * c.height) / r.height];
  };
  const stroke = (a, b) => {
    const r = c.getBoundingClientRect();
    ctx.globalCompositeOperation = $('#mask-erase').checked ? 'destination-out' : 'source-over';
    ctx.strokeStyle = ctx.fillStyle = '#ff3d8b';
    ctx.lineWidth = (Number($('#brush-size').value) * c.width) / (r.width || c.width);
    ctx.lineCap = ctx.lineJoin = 'round';
    ctx.beginPath();
    ctx.arc(b[0], b[1], ctx.lineWidth / 2, 0, Math.PI * 2);
    ctx.fill();
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
  };
  c.addEventListener('pointerdown', (ev) => {
    ev.preventDefault();
    try { c.setPointerCapture(ev.pointerId); } catch (_) { /* synthetic pointer */ }
    last = pos(ev);
    stroke(last, last);
  });
  c.addEventListener('pointermove', (ev) => {
    if (!last) return;
    const p = pos(ev);
    stroke(last, p);
    last = p;
  });
  for (const t of ['pointerup', 'pointercancel', 'lostpointercapture']) c.addEventListener(t, () => { last = null; });
  $('#mask').addEventListener('change', resetMask);
  $('#mask-clear').addEventListener('click', resetMask);
  $('#mask-fill').addEventListener('click', () => {
    ctx.globalCompositeOperation = 'source-over';
    ctx.fillStyle = '#ff3d8b';
    ctx.fillRect(0, 0, c.width, c.height);
  });
}

/** The painted mask as an 8-bit grayscale PNG blob. */
async function maskPng() {
  const c = $('#mask-canvas');
  const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
  const gray = new Uint8Array(c.width * c.height);
  let any = false;
  for (let i = 0; i < gray.length; i++) {
    gray[i] = data[i * 4 + 3];
    if (gray[i]) any = true;
  }
  if (!any) throw new ApiError('the painted mask is empty: paint where the content should be kept, or pick another mask');
  return grayPng(c.width, c.height, gray);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  let crc = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) crc = CRC_TABLE[(crc ^ out[i]) & 0xff] ^ (crc >>> 8);
  dv.setUint32(8 + data.length, (crc ^ 0xffffffff) >>> 0);
  return out;
}

/** Encodes gray pixels as a PNG (color type 0); zlib via CompressionStream, else a canvas. */
async function grayPng(w, h, gray) {
  if (typeof CompressionStream === 'undefined') {
    const c = el('canvas', { width: w, height: h });
    const ctx = c.getContext('2d');
    const img = ctx.createImageData(w, h);
    gray.forEach((g, i) => img.data.set([g, g, g, 255], i * 4));
    ctx.putImageData(img, 0, 0);
    return new Promise((ok) => c.toBlob(ok, 'image/png'));
  }
  const raw = new Uint8Array((w + 1) * h); // each row: filter byte 0, then the pixels
  for (let y = 0; y < h; y++) raw.set(gray.subarray(y * w, (y + 1) * w), y * (w + 1) + 1);
  const zlib = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream('deflate'))).arrayBuffer());
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, w);
  new DataView(ihdr.buffer).setUint32(4, h);
  ihdr[8] = 8; // bit depth; color type 0 (gray), deflate, no filter set, no interlace
  const sig = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([sig, pngChunk('IHDR', ihdr), pngChunk('IDAT', zlib), pngChunk('IEND', new Uint8Array(0))], { type: 'image/png' });
}

// ───────────────────────────── settings form ─────────────────────────────
// Empty number fields are left out, so the server's defaults apply.

const NUMBERS = [['alpha', 'alpha'], ['beta', 'beta'], ['omega', 'omega'], ['inv_steps', 'inv-steps'],
  ['steps', 'steps'], ['conv_ratio', 'conv-ratio'], ['attn_ratio', 'attn-ratio'], ['size', 'size']];

function readNumber(id) {
  const v = $(`#${id}`).value.trim();
  return v === '' || !Number.isFinite(Number(v)) ? undefined : Number(v);
}

function readSettings() {
  const s = { mode: mode(), prompt: $('#prompt').value.trim() };
  const neg = $('#negative-prompt').value;
  if (neg !== '' || state.defaults) s.negative_prompt = neg;
  s.inv_prompt = $('#inv-prompt').value.trim() || null;
  s.inv_negative_prompt = $('#inv-negative-prompt').value.trim() || null;
  for (const [key, id] of NUMBERS) {
    const v = readNumber(id);
    if (v !== undefined) s[key] = v;
  }
  s.mask = $('#mask').value;
  if (s.mode === 'transfer') {
    s.source = readVariant(sourceEditor);
    s.targets = $$('#targets .variant').map((ed) => readVariant(ed));
  } else {
    s.targets = readCocktail();
  }
  if (fromPrompt()) {
    s.content_prompt = $('#content-prompt').value.trim() || s.prompt;
    const seed = readNumber('seed');
    if (seed !== undefined) s.seed = seed;
  }
  return s;
}

function validate(s) {
  if (!s.prompt && !s.content_prompt) throw new ApiError('write a prompt first');
  if (!fromPrompt() && !state.content) throw new ApiError('choose a content image (or generate the content from a prompt)');
  const models = [s.source, ...s.targets].filter(Boolean);
  if (!s.targets.length) throw new ApiError(s.mode === 'cocktail' ? 'check at least one model for the cocktail' : 'add a target model');
  if (models.some((v) => !v.model)) throw new ApiError('pick a model for every variant (no usable checkpoint? press Rescan)');
  const max = state.limits.max_models;
  if (max && s.targets.length > max) throw new ApiError(`at most ${max} models per job`);
}

/** Fills the form from Settings (tolerates missing fields); returns catalog ids it lacks. */
function fillForm(s, { models = true } = {}) {
  if (!s) return [];
  const setText = (id, v) => { if (v != null) $(`#${id}`).value = v; };
  setText('prompt', s.prompt);
  setText('negative-prompt', s.negative_prompt);
  $('#inv-prompt').value = s.inv_prompt || '';
  $('#inv-negative-prompt').value = s.inv_negative_prompt || '';
  for (const [key, id] of NUMBERS) if (s[key] != null) setNumber(id, s[key]);
  if (s.mask && [...$('#mask').options].some((o) => o.value === s.mask)) $('#mask').value = s.mask;
  if ('content_prompt' in s) $('#content-from-prompt').checked = !!s.content_prompt;
  if (s.content_prompt) $('#content-prompt').value = s.content_prompt;
  if (s.seed != null) $('#seed').value = s.seed;
  applyContentMode();
  if (!models || !Array.isArray(s.targets) || !s.targets.length) return [];
  let missing = [];
  if (s.mode === 'cocktail') {
    setMode('cocktail');
    missing = setCocktail(s.targets);
  } else {
    setMode('transfer');
    missing = writeVariant(sourceEditor, s.source || s.targets[0]);
    $$('#targets .variant').forEach((ed) => ed.remove());
    for (const t of s.targets) missing = missing.concat(addTarget(t));
  }
  return missing;
}

function setNumber(id, v) {
  $(`#${id}`).value = v;
  const range = $(`input[type=range][data-for="${id}"]`);
  if (range) range.value = v;
}

/** Settings rebuilt from a PNG's record when the server could not map it (no model ids). */
function settingsFromRecord(r) {
  if (!r) return null;
  const d = r.ditail || {};
  return {
    prompt: r.prompt, negative_prompt: r.negative_prompt, seed: r.seed,
    inv_prompt: d.inv_prompt, inv_negative_prompt: d.inv_negative_prompt,
    alpha: d.alpha, beta: d.beta, omega: d.omega != null ? d.omega : r.omega, inv_steps: d.inv_steps,
    steps: d.steps != null ? d.steps : r.steps, conv_ratio: d.conv_ratio, attn_ratio: d.attn_ratio,
    size: d.size, mask: d.mask,
  };
}

async function loadDefaults() {
  try {
    const d = await api('/api/defaults');
    state.defaults = d.settings || null;
    state.limits = d.limits || {};
    state.device = d.device || null;
  } catch (e) {
    showError(`could not load the defaults (${e.message}); empty fields use the server's defaults`);
    return;
  }
  fillForm(state.defaults, { models: false });
  const L = state.limits;
  // A prompt over the server's limit is not cut short: the box says so while it is typed
  // in, and Run's refusal names it.
  for (const id of ['prompt', 'negative-prompt', 'inv-prompt', 'inv-negative-prompt', 'content-prompt']) {
    const box = $(`#${id}`);
    if (!L.max_prompt_chars) continue;
    box.addEventListener('input', () => {
      const n = [...box.value].length;
      const over = n > L.max_prompt_chars;
      box.setCustomValidity(over ? `${n} characters; the limit is ${L.max_prompt_chars}` : '');
      box.title = over ? `${n} characters; the limit is ${L.max_prompt_chars}` : '';
      box.classList.toggle('invalid', over);
    });
  }
  if (L.max_steps) for (const id of ['steps', 'inv-steps']) $(`#${id}`).max = L.max_steps;
  if (L.max_size) $('#size').max = L.max_size;
  // Which device runs the jobs, and what that means for the defaults.
  const dev = state.device;
  if (dev) {
    $('#device').textContent = `${dev.backend} · ${dev.dtype}`;
    $('#device').title = dev.backend === 'cpu'
      ? 'jobs run on the CPU: a 512 px transfer with 50 + 50 steps takes minutes; a smaller size or fewer steps is quicker'
      : `jobs run on the ${dev.backend} backend`;
    $('#device').classList.toggle('slow', dev.backend === 'cpu');
    $('#device').hidden = false;
  }
}

function initForm() {
  $('#form').addEventListener('submit', (ev) => ev.preventDefault());
  // Ctrl+Enter (Cmd+Enter) in a prompt box runs, as in A1111 and ComfyUI.
  $('#form').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey) && ev.target.tagName === 'TEXTAREA') {
      ev.preventDefault();
      $('#run').click();
    }
  });
  for (const r of $$('input[type=range][data-for]')) {
    const num = $(`#${r.dataset.for}`);
    r.addEventListener('input', () => { num.value = r.value; });
    num.addEventListener('input', () => { if (num.value !== '') r.value = num.value; });
  }
  $('#advanced').addEventListener('change', () => { $('#advanced-box').hidden = !$('#advanced').checked; });
  for (const r of $$('input[name=mode]')) r.addEventListener('change', applyMode);
  $('#add-target').addEventListener('click', () => addTarget());
  $('#run').addEventListener('click', guard(submit));
  $('#prompt').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) guard(submit)();
  });
}

// ───────────────────────────── jobs and events ─────────────────────────────

const EVENTS = ['queued', 'started', 'stage', 'progress', 'preview', 'content', 'inversion', 'result', 'done', 'failed', 'cancelled'];

function jobView(id) {
  let j = state.jobs.get(id);
  if (!j) {
    j = { id, status: 'queued', position: null, settings: null, sources: [], targets: [], results: new Map(),
      label: 'queued', step: 0, total: 0, eta: null, preview: null, previewAt: null, notes: [], error: null, es: null,
      contents: new Map() };
    state.jobs.set(id, j);
  }
  return j;
}

/** Merges a Job object from the API; while a stream is open its (newer) progress wins. */
function mergeJob(j, d) {
  const ended = !FINAL.has(j.status) && FINAL.has(d.status);
  if (!FINAL.has(j.status) && (!j.es || ended)) j.status = d.status;
  Object.assign(j, { position: d.position, settings: d.settings || j.settings, sources: d.sources || j.sources,
    targets: d.targets || j.targets, error: d.error || j.error });
  for (const r of d.results || []) j.results.set(r.name, r);
  const p = d.progress;
  if (FINAL.has(j.status)) {
    if (ended || !j.es) Object.assign(j, { label: finalLabel(j), eta: null });
  } else if (!j.es && p) {
    Object.assign(j, { label: progressLabel(j, p), step: p.step, total: p.total, eta: p.eta_s });
  } else if (!j.es && j.status === 'queued') {
    j.label = queuedLabel(j.position);
  }
}

async function submit() {
  clearError();
  const s = readSettings();
  validate(s);
  const fd = new FormData();
  fd.append('settings', JSON.stringify(s));
  if (!fromPrompt()) fd.append('image', state.content.blob, state.content.name);
  if (s.mask === 'painted') fd.append('mask', await maskPng(), 'mask.png');
  const run = $('#run');
  run.disabled = true;
  try {
    const { id, position } = await api('/api/jobs', { method: 'POST', body: fd });
    const j = jobView(id);
    Object.assign(j, { status: 'queued', position, settings: s, label: queuedLabel(position) });
    // Output shows the job that runs: a job queued behind another waits in the queue.
    const running = [...state.jobs.values()].some((o) => o.status === 'running');
    if (!running) { state.userFocus = false; focusJob(id); }
    refreshQueue();
    await attach(id);
  } finally {
    run.disabled = false;
  }
}

/** Opens the job's event stream (replays its past events, then live ones). */
async function attach(id) {
  const j = jobView(id);
  if (j.es) return;
  try {
    mergeJob(j, await api(`/api/jobs/${encodeURIComponent(id)}`));
  } catch (e) {
    if (e.status !== 404) throw e;
    Object.assign(j, { status: 'failed', error: 'the server no longer knows this job' }); // restarted
    j.label = finalLabel(j);
    return render(j);
  }
  if (FINAL.has(j.status) || j.es) return render(j);
  const es = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
  j.es = es;
  for (const type of EVENTS) {
    es.addEventListener(type, (ev) => {
      let data = {};
      try { data = JSON.parse(ev.data || '{}'); } catch (_) { /* keep {} */ }
      onEvent(j, type, data);
    });
  }
  // The browser reconnects by itself (the server replays); CLOSED means it gave up.
  es.onerror = () => { if (es.readyState === EventSource.CLOSED && j.es === es) j.es = null; };
  render(j);
}

function detach(j) {
  if (j.es) j.es.close();
  j.es = null;
}

function onEvent(j, type, d) {
  switch (type) {
    case 'queued': j.status = 'queued'; j.position = d.position; j.label = queuedLabel(d.position); break;
    case 'started': j.status = 'running'; j.position = null; j.label = 'started'; break;
    case 'stage': j.label = d.label || d.stage; j.step = d.stage === 'decoding' ? 1 : 0; j.total = d.stage === 'decoding' ? 1 : 0; break;
    case 'progress':
      Object.assign(j, { step: d.step, total: d.total, eta: d.eta_s, label: progressLabel(j, d),
        jobStep: d.job_step, jobTotal: d.job_total });
      break;
    case 'preview': j.preview = d.image; j.previewAt = [d.source, d.target]; break;
    case 'content': j.contents.set(d.source, { image: d.image, label: d.label }); break;
    case 'inversion': if (d.cached) note(j, `inversion reused (${nameOf(j.sources, d.source, 'source')})`); break;
    case 'result': j.results.set(d.name, d); refreshGallerySoon(); break;
    case 'failed': j.error = d.error || 'unknown error'; finish(j, 'failed'); break;
    case 'done': case 'cancelled': finish(j, type); break;
    default: break;
  }
  if (type !== 'preview' && type !== 'progress') refreshQueueSoon();
  render(j);
}

function finish(j, status) {
  j.status = status;
  j.label = finalLabel(j);
  j.eta = null;
  detach(j);
  if (status === 'failed' && j.id === state.focus) showError(`job ${j.id} failed: ${j.error}`);
  refreshGallerySoon();
}

function note(j, text) {
  if (!j.notes.includes(text)) j.notes.push(text);
}

const nameOf = (list, i, kind) => (i == null ? '' : (list && list[i]) || `${kind} ${i + 1}`);
const queuedLabel = (pos) => (pos ? `queued (${pos} ahead)` : 'queued (next)');
const finalLabel = (j) => ({ done: 'done', cancelled: 'cancelled', failed: `failed: ${j.error || ''}` }[j.status]);

function progressLabel(j, p) {
  const src = nameOf(j.sources, p.source, 'source');
  const n = `${p.step}/${p.total}`;
  if (p.stage === 'sampling') return `sampling ${n} (${src} → ${nameOf(j.targets, p.target, 'target')})`;
  if (p.stage === 'inversion') return `inversion ${n}${j.sources.length > 1 ? ` (${src})` : ''}`;
  if (p.stage === 'generation') return `generating content ${n} (${src})`;
  if (p.stage === 'loading' || p.stage === 'decoding') return `${p.stage} ${src}`.trim();
  return `${p.stage} ${n}`;
}

async function cancelJob(id) {
  await post(`/api/jobs/${encodeURIComponent(id)}/cancel`);
  refreshQueueSoon();
}

// ───────────────────────────── output (progress, preview, results, grid) ─────────────────────────────

function focusJob(id) {
  state.focus = id;
  ensureStreams();
  renderOutput();
  for (const row of $$('#queue .job')) row.classList.toggle('focus', row.dataset.id === id);
}

function render(j) {
  if (j.id === state.focus) renderOutput();
  updateQueueRow(j);
  updateRunHint();
}

const imagesOf = (j) => Math.max(1, j.sources.length) * Math.max(1, j.targets.length);

function renderOutput() {
  const j = state.jobs.get(state.focus);
  const prog = $('#progress');
  if (!j) {
    prog.className = 'progress idle';
    $('#progress-label').textContent = 'idle';
    return;
  }
  const live = !FINAL.has(j.status);
  prog.className = `progress ${j.status}`;
  prog.classList.toggle('stale', $('#conn').classList.contains('down'));
  prog.dataset.job = j.id;
  $('#job-title').textContent = `· ${j.id}`;
  $('#progress-label').textContent = j.label;
  // The whole job's steps (inversion, sampling, every pair), so the bar never restarts.
  const frac = j.status === 'done' ? 1 : j.jobTotal ? j.jobStep / j.jobTotal : j.total ? j.step / j.total : 0;
  $('#progress-fill').style.width = `${(frac * 100).toFixed(1)}%`;
  const count = j.sources.length && j.targets.length ? ` · ${j.results.size}/${imagesOf(j)} images` : '';
  $('#progress-eta').textContent = (live && j.eta != null && j.status === 'running' ? `~${fmtSecs(j.eta)} left` : '') + count;
  $('#progress-note').hidden = !j.notes.length;
  $('#progress-note').textContent = j.notes.join(' · ');
  $('#cancel-current').hidden = !live;
  const pv = $('#preview');
  if (live && j.preview) {
    if (pv.getAttribute('src') !== j.preview) pv.src = j.preview;
    pv.hidden = false;
  } else {
    pv.hidden = true;
  }
  // Contents the sources generated from the prompt, each as its source made it.
  $('#contents').replaceChildren(...[...j.contents.entries()].sort((a, b) => a[0] - b[0]).map(([s, c]) =>
    el('figure', { class: 'generated', dataset: { source: s } },
      el('img', { src: c.image, alt: `content generated by ${c.label}` }),
      el('figcaption', {}, `content · ${c.label}`))));
  renderResults(j);
  renderGrid(j);
}

const sortedResults = (j) => [...j.results.values()].sort((a, b) => a.source - b.source || a.target - b.target);

function resultImg(r) {
  return el('img', { class: 'result', src: r.url, alt: r.name, title: `${r.name} — click for details`, dataset: { name: r.name }, onclick: guard(() => openDetail(r.name)) });
}

function renderResults(j) {
  const box = $('#results');
  if (box.dataset.job !== j.id) {
    box.replaceChildren();
    box.dataset.job = j.id;
  }
  const cocktail = (j.settings && j.settings.mode) === 'cocktail';
  box.hidden = cocktail;
  const have = new Set($$('img.result', box).map((i) => i.dataset.name));
  for (const r of sortedResults(j)) {
    if (have.has(r.name)) continue;
    const caption = `${nameOf(j.sources, r.source, 'source')} → ${nameOf(j.targets, r.target, 'target')}`;
    box.append(el('figure', {}, resultImg(r), el('figcaption', {}, caption)));
  }
}

/** The cocktail grid: rows = sources, columns = targets; cells fill as results arrive. */
function renderGrid(j) {
  const grid = $('#grid');
  const cocktail = (j.settings && j.settings.mode) === 'cocktail';
  grid.hidden = !cocktail;
  if (!cocktail) return;
  const shape = `${j.id}:${j.sources.length}x${j.targets.length}`;
  if (grid.dataset.shape !== shape) {
    grid.dataset.shape = shape;
    const head = el('tr', {}, el('th', { class: 'corner' }, 'source ↓ target →'), j.targets.map((t) => el('th', {}, t)));
    const rows = j.sources.map((s, i) => el('tr', {}, el('th', {}, s),
      j.targets.map((_, k) => el('td', { dataset: { source: i, target: k } }))));
    grid.replaceChildren(el('thead', {}, head), el('tbody', {}, rows));
  }
  for (const td of $$('td', grid)) {
    const [s, t] = [Number(td.dataset.source), Number(td.dataset.target)];
    const r = [...j.results.values()].find((x) => x.source === s && x.target === t);
    if (r && !$('img', td)) {
      td.replaceChildren(resultImg(r));
      td.style.backgroundImage = '';
    }
    const live = !r && j.preview && j.previewAt && j.previewAt[0] === s && j.previewAt[1] === t && !FINAL.has(j.status);
    td.classList.toggle('live', !!live);
    if (live) td.style.backgroundImage = `url("${j.preview}")`;
  }
}

// ───────────────────────────── queue ─────────────────────────────

let queueTimer = null;
function refreshQueueSoon() {
  clearTimeout(queueTimer);
  queueTimer = setTimeout(refreshQueue, 250);
}

async function refreshQueue() {
  let jobs;
  try {
    jobs = (await api('/api/jobs')).jobs || [];
    setConn(true);
  } catch (e) {
    setConn(false, e.message);
    return;
  }
  for (const d of jobs) mergeJob(jobView(d.id), d);
  state.order = jobs.map((d) => d.id);
  renderQueue();
  // Unless a person picked a job, Output follows the one running (then the next queued).
  const focused = state.jobs.get(state.focus);
  if (!focused || (!state.userFocus && focused.status !== 'running')) {
    const next = jobs.find((d) => d.status === 'running') || jobs.find((d) => d.status === 'queued');
    if (next && next.id !== state.focus) focusJob(next.id);
  }
  ensureStreams();
  updateRunHint();
}

/** Streams stay open for running jobs and the focused one (browsers allow ~6 connections). */
function ensureStreams() {
  for (const j of state.jobs.values()) {
    const listed = state.order.includes(j.id) || j.id === state.focus;
    const want = listed && !FINAL.has(j.status) && (j.status === 'running' || j.id === state.focus);
    if (want && !j.es) guard(attach)(j.id);
    else if (!want && j.es) detach(j);
  }
}

function renderQueue() {
  const box = $('#queue');
  if (!state.order.length) {
    box.replaceChildren(el('p', { class: 'muted small' }, 'No jobs yet.'));
    return;
  }
  const rows = new Map($$('.job', box).map((r) => [r.dataset.id, r]));
  // Existing rows are moved, not rebuilt, so a click on them is never lost.
  box.replaceChildren(...state.order.map((id) => rows.get(id) || queueRow(state.jobs.get(id))));
  for (const id of state.order) updateQueueRow(state.jobs.get(id));
}

function queueRow(j) {
  const cancel = el('button', { type: 'button', class: 'ghost small cancel', title: 'cancel this job' }, 'Cancel');
  cancel.addEventListener('click', (ev) => { ev.stopPropagation(); guard(cancelJob)(j.id); });
  const pick = () => { state.userFocus = true; focusJob(j.id); };
  return el('div', {
    class: 'job', dataset: { id: j.id, status: j.status }, tabindex: '0', role: 'button',
    'aria-label': `show job ${j.id}`, onclick: pick,
    onkeydown: (ev) => { if (ev.target === ev.currentTarget && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); pick(); } },
  },
    el('span', { class: 'badge' }), el('span', { class: 'job-desc' }), el('span', { class: 'job-count muted small' }),
    cancel, el('div', { class: 'mini-bar' }, el('div', { class: 'mini-fill' })));
}

function describe(j) {
  const s = j.settings || {};
  const models = s.mode === 'cocktail' ? `cocktail ${j.targets.join(' · ')}` : `${j.sources.join(', ')} → ${j.targets.join(', ')}`;
  return `${models}${s.prompt ? ` — “${s.prompt}”` : ''}`;
}

function updateQueueRow(j) {
  const row = $$('#queue .job').find((r) => r.dataset.id === j.id);
  if (!row) return;
  row.dataset.status = j.status;
  row.className = `job ${j.status}${j.id === state.focus ? ' focus' : ''}`;
  $('.badge', row).textContent = j.status === 'queued' && j.position != null ? `queued #${j.position + 1}` : j.status;
  $('.job-desc', row).textContent = describe(j);
  $('.job-desc', row).title = j.status === 'failed' ? j.error || '' : (j.settings && j.settings.prompt) || '';
  $('.job-count', row).textContent = j.status === 'running' ? j.label : `${j.results.size}/${imagesOf(j)}`;
  $('.cancel', row).hidden = FINAL.has(j.status);
  const frac = j.status === 'done' ? 1 : j.total ? j.step / j.total : 0;
  $('.mini-fill', row).style.width = `${(frac * 100).toFixed(1)}%`;
}

function updateRunHint() {
  const busy = [...state.jobs.values()].filter((j) => !FINAL.has(j.status)).length;
  $('#run').textContent = busy ? 'Add to queue' : 'Run';
  $('#run-hint').textContent = busy ? `${busy} job${busy > 1 ? 's' : ''} running or queued` : '';
}

function setConn(ok, msg = '') {
  const c = $('#conn');
  c.textContent = ok ? 'connected' : 'offline';
  c.className = `conn ${ok ? 'ok' : 'down'}`;
  c.title = ok ? 'server connection' : msg;
  // The Output card does not pretend a job still moves while the server is away.
  const note = $('#progress-offline');
  note.hidden = ok;
  $('#progress').classList.toggle('stale', !ok);
}

// ───────────────────────────── gallery ─────────────────────────────

let galleryTimer = null;
function refreshGallerySoon() {
  clearTimeout(galleryTimer);
  galleryTimer = setTimeout(guard(refreshGallery), 400);
}

async function refreshGallery() {
  state.gallery = (await api('/api/results')).results || [];
  renderGallery();
}

/** The gallery as the filter and the order ask (the server lists it newest first). */
function renderGallery() {
  const box = $('#gallery');
  const items = new Map($$('.gallery-item', box).map((i) => [i.dataset.name, i]));
  const words = $('#gallery-filter').value.toLowerCase().split(/\s+/).filter(Boolean);
  const text = (g) => `${galleryCaption(g.record || {})} ${(g.record || {}).prompt || ''} ${g.name}`.toLowerCase();
  let shown = state.gallery.filter((g) => words.every((w) => text(g).includes(w)));
  const order = $('#gallery-sort').value;
  if (order === 'oldest') shown = [...shown].reverse();
  if (order === 'models') {
    shown = [...shown].sort((a, b) => galleryCaption(a.record || {}).localeCompare(galleryCaption(b.record || {})));
  }
  box.replaceChildren(...shown.map((g) => items.get(g.name) || galleryItem(g)));
  if (!state.gallery.length) box.append(el('p', { class: 'muted small' }, 'Finished images appear here.'));
  else if (!shown.length) box.append(el('p', { class: 'muted small' }, 'No image matches the filter.'));
}

/** A result's record in words: models by name (not path), prompts, the method's numbers. */
function detailRows(r) {
  const rows = [];
  const add = (k, v) => { if (v !== undefined && v !== null && v !== '') rows.push([k, String(v)]); };
  const m = r.model || {};
  add(r.source ? 'source → target' : 'model', galleryCaption(r));
  add('prompt', r.prompt);
  add('negative prompt', r.negative_prompt);
  const d = r.ditail;
  if (d) {
    if (d.inv_prompt !== r.prompt) add('inversion prompt', d.inv_prompt);
    add('α / β', `${d.alpha} / ${d.beta}`);
    add('ω', r.omega);
    add('steps', `${d.inv_steps} inversion, ${d.steps} sampling`);
    const mask = ['full', 'left', 'right', 'top', 'bottom'].includes(d.mask) ? d.mask : 'painted';
    add('injection', d.no_injection ? 'none' : `conv ${d.conv_ratio}, attention ${d.attn_ratio}, mask ${mask}`);
    add('size', `${d.size} (${r.width} × ${r.height})`);
  } else {
    add('seed', r.seed);
    add('steps', r.steps);
    add('ω', r.omega);
    add('size', `${r.width} × ${r.height}`);
  }
  for (const l of m.loras || []) add('LoRA', `${modelLabel(l.path)} × ${l.scale}`);
  if (m.vae) add('VAE', modelLabel(m.vae));
  if (m.clip_skip > 1) add('clip skip', m.clip_skip);
  for (const e of r.embeddings || []) add('embedding', e.name);
  add('ran on', [r.backend, r.dtype].filter(Boolean).join(' · '));
  return rows;
}

/** A model's short name from its recorded path or id (file stem, folder name). */
const modelLabel = (m) => (m || '').replace(/[\\/]+$/, '').split(/[\\/]/).pop().replace(/\.safetensors$/, '');

/** What an output is: "source → target" for a transfer (a cocktail's cells differ only
 * there), the model for a generated image. */
function galleryCaption(r) {
  const target = modelLabel(r.model && r.model.model);
  return r.source ? `${modelLabel(r.source.model)} → ${target}` : target;
}

function galleryItem(g) {
  const r = g.record || {};
  const caption = galleryCaption(r) || g.name;
  return el('button', { type: 'button', class: 'gallery-item', dataset: { name: g.name }, title: `${caption}\n${r.prompt || ''}\n${g.name}`, onclick: guard(() => openDetail(g.name)) },
    el('img', { src: g.url, alt: `${caption}: ${r.prompt || g.name}`, loading: 'lazy' }),
    el('span', { class: 'cap' }, caption));
}

async function openDetail(name) {
  let g = state.gallery.find((x) => x.name === name);
  if (!g) {
    await refreshGallery();
    g = state.gallery.find((x) => x.name === name);
  }
  if (!g) throw new ApiError(`${name} is not in the gallery`);
  state.detail = g;
  $('#detail-img').src = g.url;
  $('#detail-name').textContent = g.name;
  $('#detail-download').href = g.url;
  $('#detail-download').download = g.name;
  $('#detail-summary').replaceChildren(...detailRows(g.record || {}).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  $('#detail-record').textContent = JSON.stringify(g.record, null, 2);
  $('#detail-cocktail').disabled = !detailVariants(g).length;
  $('#detail').showModal();
}

const detailVariants = (g) => {
  const s = g.settings;
  if (!s) return [];
  const all = [s.source, ...(s.targets || [])].filter((v) => v && isUsable(v.model));
  return all.filter((v, i) => all.findIndex((w) => JSON.stringify(w) === JSON.stringify(v)) === i);
};

function reportMissing(missing) {
  const names = [...new Set(missing)];
  if (names.length) showError(`not in the model catalog any more (press Rescan?): ${names.join(', ')}`);
}

function initGallery() {
  const dlg = $('#detail');
  $('#detail-close').addEventListener('click', () => dlg.close());
  dlg.addEventListener('click', (ev) => { if (ev.target === dlg) dlg.close(); });
  $('#detail-use').addEventListener('click', guard(async () => {
    await contentFromUrl(state.detail.url, state.detail.name);
    dlg.close();
  }));
  $('#detail-reuse').addEventListener('click', guard(async () => {
    const g = state.detail;
    clearError();
    const settings = g.settings || settingsFromRecord(g.record);
    reportMissing(fillForm(settings));
    const notes = [];
    if (!g.settings) notes.push('models of that image are not in the catalog: reused the prompts and numbers');
    // The job's own content and painted mask, while the server keeps them.
    if (g.content_url) await contentFromUrl(g.content_url, `content of ${g.name}`);
    else if (g.record && g.record.ditail) notes.push('its content image is no longer kept: drop it again');
    if (g.mask_url) await maskFromUrl(g.mask_url);
    else if (settings && settings.mask === 'painted') {
      $('#mask').value = 'painted';
      resetMask();
      notes.push('its painted mask is no longer kept: paint it again');
    }
    $('#run-hint').textContent = notes.join('; ');
    dlg.close();
  }));
  $('#detail-cocktail').addEventListener('click', () => {
    clearError();
    setMode('cocktail');
    reportMissing(setCocktail(detailVariants(state.detail)));
    dlg.close();
  });
  $('#gallery-refresh').addEventListener('click', guard(refreshGallery));
  $('#gallery-filter').addEventListener('input', renderGallery);
  $('#gallery-sort').addEventListener('change', renderGallery);
  $('#detail-delete').addEventListener('click', guard(async () => {
    const g = state.detail;
    if (!window.confirm(`Delete ${g.name} from the output folder?`)) return;
    await api(`/api/results/${encodeURIComponent(g.name)}`, { method: 'DELETE' });
    dlg.close();
    await refreshGallery();
  }));
}

// ───────────────────────────── start-up ─────────────────────────────

async function start() {
  $('#error-close').addEventListener('click', clearError);
  initForm();
  initContent();
  initMask();
  initGallery();
  initEmbeddings();
  $('#rescan').addEventListener('click', guard(async () => {
    $('#rescan').disabled = true;
    try { await loadModels(true); } finally { $('#rescan').disabled = false; }
  }));
  $('#cancel-current').addEventListener('click', () => { if (state.focus) guard(cancelJob)(state.focus); });
  await Promise.all([guard(loadModels)(), loadDefaults()]);
  initTransfer();
  applyMode();
  applyContentMode();
  await refreshQueue(); // reattaches to running and queued jobs
  guard(refreshGallery)();
  setInterval(refreshQueue, 3000);
  document.body.dataset.ready = 'true';
}

start();
