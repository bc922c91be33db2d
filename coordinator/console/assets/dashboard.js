// The dashboard: /health, /stats and /metrics polled every second, drawn
// as tiles, tables (workers, profiles), the KV cache, the start-up's
// progress and live charts.

import { getJSON, getText } from './api.js';
import { LineChart } from './charts.js';
import { bytes, el, num, percent, seconds } from './format.js';
import { delta, histogram, parseMetrics, quantile, total } from './metrics.js';

const POLL_MS = 1000;
const KEEP_MS = 130 * 1000; // the charts' two minutes, and a little more
const QUANTILE_WINDOW_MS = 10 * 1000;
const RATE_WINDOW_MS = 3 * 1000;

const $ = (id) => document.getElementById(id);

function setText(id, text) {
  const e = $(id);
  if (e.textContent !== text) e.textContent = text;
}

// table builds a table from column heads and rows of cells (a cell is text
// or a node).
function table(heads, rows, caption) {
  const t = el('table');
  if (caption) t.append(el('caption', 'sr-only', caption));
  const hr = el('tr');
  for (const h of heads) {
    const th = el('th', null, h);
    th.scope = 'col';
    hr.append(th);
  }
  t.append(el('thead'));
  t.tHead.append(hr);
  const body = el('tbody');
  for (const r of rows) {
    const tr = el('tr');
    for (const c of r) {
      const td = el('td');
      td.append(c instanceof Node ? c : document.createTextNode(String(c)));
      tr.append(td);
    }
    body.append(tr);
  }
  t.append(body);
  return t;
}

// bar is a horizontal bar of parts [{ value, cls, label }] out of whole.
function bar(parts, whole, label) {
  const b = el('div', 'bar');
  b.setAttribute('role', 'img');
  b.setAttribute('aria-label', label);
  for (const p of parts) {
    const seg = el('span', `seg ${p.cls}`);
    seg.style.width = `${whole > 0 ? (100 * p.value) / whole : 0}%`;
    b.append(seg);
  }
  return b;
}

function stateBadge(state) {
  const cls = { ready: 'ok', ok: 'ok', failed: 'bad', lost: 'bad', unreachable: 'bad', draining: 'warn',
    degraded: 'warn', starting: 'warn', loading: 'warn', registered: 'warn' }[state] || 'warn';
  return el('span', `badge ${cls}`, state);
}

function progress(done, totalBytes, label) {
  const p = el('progress');
  p.max = totalBytes > 0 ? totalBytes : 1;
  p.value = totalBytes > 0 ? Math.min(done, totalBytes) : 0;
  p.setAttribute('aria-label', label);
  return p;
}

export class Dashboard {
  constructor({ onHealth }) {
    this.onHealth = onHealth;
    this.samples = []; // [{ t, requests, stepSeqs, stepTokens, ttft, itl, step }]
    this.points = []; // chart points
    this.paused = false;
    this.busy = false;

    const charts = $('charts');
    const rate = (v, axis) => (axis ? num(v) : `${num(v)}/s`);
    const ms = (v, axis) => (axis && v === 0 ? '0' : seconds(v));
    this.charts = [
      new LineChart(charts, { id: 'chart-rps', title: 'Requests finished/s', format: rate,
        series: [{ key: 'rps', label: 'requests' }] }),
      new LineChart(charts, { id: 'chart-tps', title: 'Tokens/s', format: rate,
        series: [{ key: 'outTps', label: 'output' }, { key: 'allTps', label: 'with prompt' }] }),
      new LineChart(charts, { id: 'chart-ttft', title: 'Time to first token', format: ms,
        series: [{ key: 'ttft50', label: 'p50' }, { key: 'ttft95', label: 'p95' }] }),
      new LineChart(charts, { id: 'chart-itl', title: 'Inter-token latency', format: ms,
        series: [{ key: 'itl50', label: 'p50' }, { key: 'itl95', label: 'p95' }] }),
      new LineChart(charts, { id: 'chart-load', title: 'Requests in flight', format: (v) => num(v),
        series: [{ key: 'running', label: 'running' }, { key: 'queued', label: 'queued' }] }),
      new LineChart(charts, { id: 'chart-step', title: 'Engine step (mean)', format: ms,
        series: [{ key: 'stepMean', label: 'step' }] }),
    ];

    const pause = $('dash-pause');
    pause.addEventListener('click', () => {
      this.paused = !this.paused;
      pause.setAttribute('aria-pressed', String(this.paused));
      pause.textContent = this.paused ? 'Resume' : 'Pause';
      if (!this.paused) this.poll();
    });
  }

  start() {
    this.poll();
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  async poll() {
    if (this.busy || this.paused || document.hidden) return;
    this.busy = true;
    try {
      const [health, stats, metrics] = await Promise.allSettled([
        getJSON('/health'), getJSON('/stats'), getText('/metrics'),
      ]);
      const now = Date.now();
      if (health.status === 'fulfilled') {
        this.renderHealth(health.value);
        this.onHealth(health.value);
      } else {
        this.renderDown(health.reason);
        this.onHealth(null, health.reason);
      }
      if (stats.status === 'fulfilled') this.renderStats(stats.value);
      this.addPoint(now, stats.status === 'fulfilled' ? stats.value : null,
        metrics.status === 'fulfilled' ? parseMetrics(metrics.value) : null);
      setText('dash-updated', `updated ${new Date(now).toLocaleTimeString()}`);
    } finally {
      this.busy = false;
    }
  }

  renderDown(err) {
    setText('t-status', 'unreachable');
    $('t-status').className = 'bad';
    setText('dash-updated', err?.describe ? err.describe() : String(err));
  }

  renderHealth(h) {
    setText('t-status', h.status);
    $('t-status').className = { ok: 'ok', failed: 'bad' }[h.status] || 'warn';
    this.renderStartup(h);
    this.renderWorkers(h);
    this.renderKV(h.kv_cache);
  }

  renderStartup(h) {
    const box = $('startup');
    const s = h.startup;
    box.hidden = !s || h.phase === 'ready';
    if (box.hidden) return;
    setText('startup-phase', s.phase);
    setText('startup-reason', [s.repo && `${s.repo}${s.revision ? `@${s.revision}` : ''}`, s.reason,
      `${seconds(s.elapsed_seconds)} so far`].filter(Boolean).join(' · '));
    const err = $('startup-error');
    err.hidden = !s.error;
    setText('startup-error', s.error || '');
    this.renderTransfer($('startup-download'), 'Download', s.download,
      (f) => f.name, (f) => `${f.name}`);
    this.renderTransfer($('startup-load'), 'Load', s.load,
      (w) => `rank ${w.rank ?? w.name ?? '?'}${w.state ? ` (${w.state})` : ''}`, (w) => `worker rank ${w.rank ?? '?'}`);
  }

  // renderTransfer draws a download or a load: the whole, then each part
  // (files, or workers).
  renderTransfer(box, title, x, partName, partLabel) {
    box.replaceChildren();
    if (!x) return;
    const line = [`${bytes(x.bytes_done)} of ${bytes(x.bytes_total)}`];
    if (x.bytes_per_second) line.push(`${bytes(x.bytes_per_second)}/s`);
    if (x.eta_seconds) line.push(`${seconds(x.eta_seconds)} left`);
    const head = el('p', 'transfer-head');
    head.append(el('strong', null, `${title} ${percent(x.bytes_done, x.bytes_total)}`), ` · ${line.join(' · ')}`);
    box.append(head, progress(x.bytes_done, x.bytes_total, `${title}: ${percent(x.bytes_done, x.bytes_total)}`));
    const parts = [...(x.files || []), ...(x.workers || [])];
    if (!parts.length) return;
    const list = el('ul', 'parts');
    for (const p of parts) {
      const li = el('li');
      li.append(el('span', 'part-name', partName(p)),
        progress(p.bytes_done, p.bytes_total, `${partLabel(p)}: ${percent(p.bytes_done, p.bytes_total)}`),
        el('span', 'part-num', `${percent(p.bytes_done, p.bytes_total)} of ${bytes(p.bytes_total)}`));
      list.append(li);
    }
    box.append(list);
  }

  renderWorkers(h) {
    const box = $('workers');
    const ws = [...(h.workers || [])].sort((a, b) => a.rank - b.rank);
    if (!ws.length) {
      box.replaceChildren(el('p', 'muted', h.mode === 'mock'
        ? 'No worker processes: the mock engine runs inside the coordinator.'
        : 'No worker has registered yet.'));
      return;
    }
    const rows = ws.map((w) => {
      const mem = el('div', 'mem');
      if (w.memory_total > 0) {
        mem.append(bar([{ value: w.memory_used, cls: 'used' }], w.memory_total,
          `memory ${percent(w.memory_used, w.memory_total)} used`),
        el('span', 'num', `${bytes(w.memory_used)} / ${bytes(w.memory_total)}`));
      } else {
        mem.append(el('span', 'muted', 'not reported'));
      }
      const state = el('span');
      state.append(stateBadge(w.lost ? 'lost' : w.state || 'unknown'));
      if (w.state === 'loading' && w.load_bytes_total > 0) {
        state.append(` ${percent(w.load_bytes_done, w.load_bytes_total)}`);
      }
      if (w.error) state.append(el('span', 'worker-error', ` ${w.error}`));
      const mean = w.steps > 0 && w.step_time_ns > 0 ? seconds(w.step_time_ns / w.steps / 1e9) : '–';
      const last = w.last_step_ns > 0 ? seconds(w.last_step_ns / 1e9) : '–';
      return [String(w.rank), w.device || '–', mem, state, String(w.restarts ?? 0),
        num(w.steps ?? 0), `${mean} · ${last}`, String(w.sequences ?? 0)];
    });
    box.replaceChildren(table(['Rank', 'Device', 'Memory', 'State', 'Restarts', 'Steps', 'Step mean · last', 'Seqs'],
      rows, 'Worker processes, one per device'));
  }

  renderKV(kv) {
    const box = $('kv');
    if (!kv) {
      setText('t-kv', '–');
      setText('t-prefix', '–');
      box.replaceChildren(el('p', 'muted',
        'The scheduler manages no paged KV cache here (the mock engine keeps none).'));
      return;
    }
    setText('t-kv', percent(kv.blocks_used, kv.blocks));
    setText('t-prefix', kv.prefix_cache_lookups > 0 ? percent(kv.prefix_cache_hits, kv.prefix_cache_lookups) : '–');
    const pool = (name, used, cached, free, all) => {
      const row = el('div', 'pool');
      row.append(el('span', 'pool-name', name),
        bar([{ value: used, cls: 'used' }, { value: cached, cls: 'cached' }], all,
          `${name}: ${used} used, ${cached} cached, ${free} free of ${all} blocks`),
        el('span', 'num', `${used} used · ${cached} cached · ${free} free of ${all}`));
      return row;
    };
    const rows = [pool('Full attention', kv.blocks_used, kv.blocks_cached, kv.blocks_free, kv.blocks)];
    if (kv.sliding_blocks > 0) {
      rows.push(pool(`Sliding (${kv.sliding_window} tokens)`, kv.sliding_blocks_used, kv.sliding_blocks_cached,
        kv.sliding_blocks_free, kv.sliding_blocks));
    }
    const note = el('p', 'muted', `Blocks of ${kv.block_size} tokens, ${kv.sequences} sequences holding some. ` +
      `Prefix cache: ${kv.prefix_cache_hits} of ${kv.prefix_cache_lookups} prompt blocks found ` +
      `(${percent(kv.prefix_cache_hits, kv.prefix_cache_lookups)}).`);
    const legend = el('p', 'kv-legend');
    legend.append(el('span', 'swatch used'), ' used by running sequences ', el('span', 'swatch cached'),
      ' held only by the prefix cache');
    box.replaceChildren(...rows, legend, note);
  }

  renderStats(s) {
    const t = s.stats.total;
    setText('t-running', String(t.active));
    setText('t-queued', String(t.queued));
    setText('t-cancelled', String(t.cancelled_total));
    const rows = Object.entries(s.stats.profiles)
      .filter(([name, p]) => !name.startsWith('_') || p.requests_total > 0)
      .map(([name, p]) => [name === s.profile ? `${name} (default)` : name, String(p.active), String(p.queued),
        num(p.requests_total), String(p.cancelled_total), seconds(p.ttft_seconds.p50),
        seconds(p.inter_token_latency_seconds.p50), num(p.output_tokens_per_second)]);
    $('profiles').replaceChildren(table(
      ['Profile', 'Running', 'Queued', 'Requests', 'Cancelled', 'TTFT p50', 'ITL p50', 'Tokens/s'],
      rows, 'Queues and latencies per serving profile (percentiles of the last 10 000 requests)'));
  }

  // addPoint turns the counters and histograms of /metrics into rates and
  // recent percentiles, and redraws the charts.
  addPoint(now, stats, m) {
    const point = { t: now, values: {} };
    const v = point.values;
    if (stats) {
      v.running = stats.stats.total.active;
      v.queued = stats.stats.total.queued;
    }
    if (m) {
      const sample = {
        t: now,
        requests: total(m, 'gptoss_requests_total'),
        stepSeqs: total(m, 'gptoss_step_sequences_sum'),
        stepTokens: total(m, 'gptoss_step_tokens_sum'),
        ttft: histogram(m, 'gptoss_time_to_first_token_seconds'),
        itl: histogram(m, 'gptoss_inter_token_latency_seconds'),
        step: histogram(m, 'gptoss_step_duration_seconds'),
      };
      // Rates over the last three seconds (or what there is of them).
      const older = this.samples.filter((s) => s.t <= now - RATE_WINDOW_MS);
      const prev = older.length ? older[older.length - 1] : this.samples[0];
      if (prev) {
        const dt = (now - prev.t) / 1000;
        const rate = (k) => (sample[k] >= prev[k] ? (sample[k] - prev[k]) / dt : null);
        v.rps = rate('requests');
        v.outTps = rate('stepSeqs');
        v.allTps = rate('stepTokens');
        const steps = delta(sample.step, prev.step);
        v.stepMean = steps.count > 0 ? steps.sum / steps.count : null;
      }
      // Percentiles of what was observed in the last ten seconds.
      const base = this.samples.find((s) => s.t >= now - QUANTILE_WINDOW_MS);
      if (base) {
        const ttft = delta(sample.ttft, base.ttft);
        const itl = delta(sample.itl, base.itl);
        v.ttft50 = quantile(0.5, ttft);
        v.ttft95 = quantile(0.95, ttft);
        v.itl50 = quantile(0.5, itl);
        v.itl95 = quantile(0.95, itl);
      }
      this.samples.push(sample);
      this.samples = this.samples.filter((s) => s.t >= now - QUANTILE_WINDOW_MS - 2 * POLL_MS);
    }
    setText('t-rps', v.rps == null ? '–' : num(v.rps));
    setText('t-tps', v.outTps == null ? '–' : num(v.outTps));
    this.points.push(point);
    this.points = this.points.filter((p) => p.t >= now - KEEP_MS);
    for (const c of this.charts) c.update(this.points, now);
  }
}
