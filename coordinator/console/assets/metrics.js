// Reading /metrics: the Prometheus text format, sums over series, and
// quantiles of histograms (as PromQL's histogram_quantile computes them).

// parseMetrics returns a Map from sample name (a histogram's buckets are
// "<name>_bucket") to its samples, each { labels, value }.
export function parseMetrics(text) {
  const out = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const sample = parseLine(line);
    if (!sample) continue;
    let list = out.get(sample.name);
    if (!list) out.set(sample.name, (list = []));
    list.push({ labels: sample.labels, value: sample.value });
  }
  return out;
}

// parseLine reads `name{label="value",...} value [timestamp]`; null when
// the line is not a sample.
function parseLine(line) {
  let i = 0;
  while (i < line.length && line[i] !== '{' && line[i] !== ' ' && line[i] !== '\t') i++;
  const name = line.slice(0, i);
  if (!name) return null;
  const labels = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      while (line[i] === ' ' || line[i] === ',') i++;
      if (i >= line.length) return null;
      if (line[i] === '}') {
        i++;
        break;
      }
      const eq = line.indexOf('=', i);
      if (eq < 0 || line[eq + 1] !== '"') return null;
      const key = line.slice(i, eq).trim();
      let value = '';
      let j = eq + 2;
      for (; j < line.length && line[j] !== '"'; j++) {
        if (line[j] === '\\' && j + 1 < line.length) {
          j++;
          value += line[j] === 'n' ? '\n' : line[j];
        } else {
          value += line[j];
        }
      }
      if (j >= line.length) return null;
      labels[key] = value;
      i = j + 1;
    }
  }
  const fields = line.slice(i).trim().split(/\s+/);
  const value = parseValue(fields[0]);
  return Number.isNaN(value) && fields[0] !== 'NaN' ? null : { name, labels, value };
}

function parseValue(s) {
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  return s === undefined || s === '' ? NaN : Number(s);
}

// total sums every sample of name whose labels match (all of match's
// label values); 0 when there is none.
export function total(metrics, name, match = {}) {
  let sum = 0;
  for (const s of metrics.get(name) || []) {
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

// histogram merges the series of a histogram (summed over their other
// labels) into cumulative buckets sorted by upper bound, with its count and
// sum: { buckets: [{ le, count }], count, sum }.
export function histogram(metrics, name) {
  const byLe = new Map();
  for (const s of metrics.get(`${name}_bucket`) || []) {
    const le = parseValue(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  const buckets = [...byLe].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
  return { buckets, count: total(metrics, `${name}_count`), sum: total(metrics, `${name}_sum`) };
}

// delta is what a histogram gained from an earlier reading to a later one:
// the observations between them (a restarted server's reset counts as new).
export function delta(later, earlier) {
  if (!earlier || later.count < earlier.count) return later;
  const before = new Map(earlier.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: later.buckets.map((b) => ({ le: b.le, count: b.count - (before.get(b.le) || 0) })),
    count: later.count - earlier.count,
    sum: later.sum - earlier.sum,
  };
}

// quantile estimates the q-quantile (0..1) of a histogram: the bucket that
// holds it, linearly interpolated inside (from 0 for the first); the
// highest finite bound when it falls in +Inf. null without observations.
export function quantile(q, h) {
  const buckets = h.buckets;
  if (!buckets.length) return null;
  const count = buckets[buckets.length - 1].count;
  if (!(count > 0)) return null;
  const rank = q * count;
  let lower = 0;
  let below = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower;
      if (b.count === below) return b.le;
      return lower + (b.le - lower) * ((rank - below) / (b.count - below));
    }
    lower = b.le;
    below = b.count;
  }
  return lower;
}
