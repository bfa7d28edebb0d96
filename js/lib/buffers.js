// Binary traits: pictures (H×W×3 uint8) and maps (h×w float16) arrive as raw bytes.

// A binary trait arrives as a DataView (live kernel) or ArrayBuffer/typed array (restored state).
export function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return new Uint8Array(0);
}

// IEEE 754 binary16 → float32 for every 16-bit pattern, built once (subnormals, ±Inf and NaN included).
export const HALF = /* @__PURE__ */ (() => {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) table[h] = sign * 2 ** -14 * (fraction / 1024);
    else if (exponent === 31) table[h] = fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
    else table[h] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }
  return table;
})();

// `count` little-endian float16 values times `scale` as a Float32Array, or null when the byte length is not
// 2 × count. The bytes are copied first, so a view at an odd offset decodes too.
export function decodeHalf(bytes, count, scale = 1) {
  if (!count || bytes.length !== 2 * count) return null;
  const halves = new Uint16Array(bytes.slice().buffer);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = HALF[halves[i]] * scale;
  return values;
}

// Fill RGBA pixels (`rgba`, 4 bytes per pixel) from packed RGB bytes, opaque; false when the lengths differ.
export function rgbToRgba(rgb, rgba) {
  if (rgb.length / 3 !== rgba.length / 4) return false;
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    rgba[j] = rgb[i];
    rgba[j + 1] = rgb[i + 1];
    rgba[j + 2] = rgb[i + 2];
    rgba[j + 3] = 255;
  }
  return true;
}
