// The console's entry: the header (server line, API key) and the two
// panels, chat and dashboard.

import { authHeaders, getJSON, getKey, setKey } from './api.js';
import { initChat } from './chat.js';
import { Dashboard } from './dashboard.js';

const $ = (id) => document.getElementById(id);

// What /health last said, for the chat's model and profiles.
const server = { model: '', profiles: ['latency_first', 'balanced', 'quality_first'], profile: 'balanced', streaming: true };

// ---- the API key ----

const keyPanel = $('key-panel');
const keyToggle = $('key-toggle');
const keyInput = $('key-input');
const keyStatus = $('key-status');

function showKeyPanel(show, focus) {
  keyPanel.hidden = !show;
  keyToggle.setAttribute('aria-expanded', String(show));
  if (show && focus) keyInput.focus();
}

// checkKey asks an authenticated endpoint whether the key (or no key)
// is accepted, and says so.
async function checkKey({ focusOnFailure = false } = {}) {
  let resp;
  try {
    resp = await fetch('/v1/models', { headers: { Accept: 'application/json', ...authHeaders() }, cache: 'no-store' });
  } catch {
    keyStatus.textContent = 'The server cannot be reached to check the key.';
    return;
  }
  const has = getKey() !== '';
  if (resp.ok) {
    keyStatus.textContent = has ? 'The key is accepted.' : 'This server needs no API key.';
    keyToggle.textContent = has ? 'API key ✓' : 'API key';
    keyToggle.classList.remove('attention');
    return;
  }
  if (resp.status === 401) {
    keyStatus.textContent = has
      ? 'The server refused this key (401 Unauthorized). Enter a valid one.'
      : 'This server requires an API key. Enter it to chat.';
    keyToggle.textContent = 'API key needed';
    keyToggle.classList.add('attention');
    showKeyPanel(true, focusOnFailure);
    return;
  }
  keyStatus.textContent = `Checking the key failed: ${resp.status} ${resp.statusText}.`;
}

keyToggle.addEventListener('click', () => showKeyPanel(keyPanel.hidden, true));
keyInput.value = getKey();
$('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  setKey(keyInput.value.trim());
  checkKey({ focusOnFailure: true });
});
$('key-forget').addEventListener('click', () => {
  setKey('');
  keyInput.value = '';
  checkKey();
});
keyPanel.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    showKeyPanel(false);
    keyToggle.focus();
  }
});

// ---- panels ----

const chat = initChat({
  server: () => server,
  onUnauthorized: () => {
    checkKey();
    showKeyPanel(true, true);
  },
});

let lastLine = '';
const dashboard = new Dashboard({
  onHealth(h, err) {
    let line;
    if (h) {
      server.model = h.model;
      if (Array.isArray(h.profiles) && h.profiles.length) server.profiles = h.profiles;
      if (h.profile) server.profile = h.profile;
      server.streaming = h.streaming;
      chat.setProfiles(server.profiles, server.profile);
      line = [h.model, h.mode === 'mock' ? 'mock engine' : `${(h.workers || []).length} worker(s)`,
        h.status, h.version && `version ${h.version}`].filter(Boolean).join(' · ');
      document.body.classList.toggle('mock', h.mode === 'mock');
    } else {
      line = `Server unreachable: ${err?.message || err}`;
    }
    if (line !== lastLine) $('server-line').textContent = lastLine = line;
  },
});

dashboard.start();
checkKey();
// When /health does not answer, the built-in profiles are offered.
setTimeout(() => chat.setProfiles(server.profiles, server.profile), 3000);
