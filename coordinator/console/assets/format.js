// Numbers as people read them.

// num writes v with about three significant digits.
export function num(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (Number.isInteger(v) || a >= 100) return Math.round(v).toLocaleString('en-US');
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

// seconds writes a duration given in seconds: "850 µs", "12 ms", "1.4 s".
export function seconds(s, short = false) {
  if (s == null || !Number.isFinite(s)) return '–';
  if (s === 0) return short ? '0' : '0 ms';
  if (s < 0.001) return `${Math.round(s * 1e6)} µs`;
  if (s < 1) return `${num(s * 1000)} ms`;
  if (s < 120) return `${num(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

// bytes writes a size in binary units: "512 MiB", "13.8 GiB".
export function bytes(n) {
  if (n == null || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : num(n)} ${units[i]}`;
}

// percent writes part of whole: "40%", "6.3%".
export function percent(part, whole) {
  if (!(whole > 0)) return '–';
  const p = (100 * part) / whole;
  return `${p >= 10 || p === 0 ? Math.round(p) : p.toFixed(1)}%`;
}

// el builds an element with a class and text (text is always text).
export function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text != null) e.textContent = text;
  return e;
}
