// Colour mapping of attribution maps: the colour range (clip), value → colormap position, lookup in a
// 256-entry RGB table (xai_widgets/colormaps.py sends the tables as 256×3 uint8 each).

// Linear interpolation between order statistics of an ascending array, as numpy.percentile's default.
export function percentileOf(sorted, p) {
  if (!sorted.length) return 0;
  const position = (p / 100) * (sorted.length - 1);
  const low = Math.floor(position);
  const high = Math.min(low + 1, sorted.length - 1);
  return sorted[low] + (sorted[high] - sorted[low]) * (position - low);
}

// The ascending |values| that percentile clipping reads (build once per map).
export function sortedMagnitudes(values) {
  return Float32Array.from(values, Math.abs).sort();
}

// The colour range's upper end: the p-th percentile of |v| (`clip` "percentile", from `sorted`) or max |v|
// ("symmetric"); 1 when that is 0 or not finite, so an all-zero map stays at the colormap's zero.
export function colourLimit(values, { clip, percentile, sorted }) {
  let limit = 0;
  if (clip === "percentile") {
    limit = percentileOf(sorted || sortedMagnitudes(values), percentile);
  } else {
    for (let i = 0; i < values.length; i++) limit = Math.max(limit, Math.abs(values[i]));
  }
  return limit > 0 && Number.isFinite(limit) ? limit : 1;
}

// Colormap positions 0..255: a diverging map puts -limit at 0, 0 at the middle (128) and +limit at 255;
// a sequential map shows |v| from 0 (0) to limit (255). Values beyond the limit saturate; NaN maps to 0 or 128.
export function positionsOf(values, limit, diverging) {
  const positions = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i] / limit;
    const t = diverging ? 0.5 + 0.5 * Math.max(-1, Math.min(1, v)) : Math.min(1, Math.abs(v));
    positions[i] = Number.isNaN(t) ? (diverging ? 128 : 0) : Math.round(t * 255);
  }
  return positions;
}

// Fill RGBA pixels with the table's colour at each position (`rgb`: 256×3 uint8), opaque.
export function paintPositions(positions, rgb, rgba) {
  for (let p = 0; p < positions.length; p++) {
    const k = positions[p] * 3;
    rgba[4 * p] = rgb[k];
    rgba[4 * p + 1] = rgb[k + 1];
    rgba[4 * p + 2] = rgb[k + 2];
    rgba[4 * p + 3] = 255;
  }
}

// One row of a colour bar `width` pixels wide (RGBA), running through the whole table left to right.
export function colorbarRow(rgb, width) {
  const row = new Uint8ClampedArray(4 * width);
  for (let x = 0; x < width; x++) {
    const k = Math.round((x / Math.max(1, width - 1)) * 255) * 3;
    row.set([rgb[k], rgb[k + 1], rgb[k + 2], 255], 4 * x);
  }
  return row;
}
