// The value readout under the mouse: which map cell a pointer position falls in, and how a value is written.

// Three significant digits, exponent notation outside [1e-3, 1e4) (and where toPrecision chooses it).
export function format(value) {
  if (value === 0) return "0";
  if (!Number.isFinite(value)) return String(value);
  const magnitude = Math.abs(value);
  return magnitude >= 1e-3 && magnitude < 1e4 ? value.toPrecision(3) : value.toExponential(2);
}

// The cell (row, column) of an h×w grid under a pointer at fractions (fx, fy) of the drawn box; the right
// and bottom edges belong to the last cell.
export function cellAt(fx, fy, height, width) {
  const clampX = Math.min(0.999999, Math.max(0, fx));
  const clampY = Math.min(0.999999, Math.max(0, fy));
  return { row: Math.floor(clampY * height), column: Math.floor(clampX * width) };
}

// The readout line for the pointer at (fx, fy) over a map of `mapShape` [h, w] drawn over a picture of
// `pictureShape` (null when none): the map cell, the picture pixel when the sizes differ, and the value.
export function readoutText(values, fx, fy, mapShape, pictureShape = null) {
  const [height, width] = mapShape;
  const { row, column } = cellAt(fx, fy, height, width);
  let where = `x ${column}, y ${row}`;
  if (pictureShape && (pictureShape[0] !== height || pictureShape[1] !== width)) {
    const pixel = cellAt(fx, fy, pictureShape[0], pictureShape[1]);
    where += ` (image x ${pixel.column}, y ${pixel.row})`;
  }
  return `${where}: ${format(values[row * width + column])}`;
}
