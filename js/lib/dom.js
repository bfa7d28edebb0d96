// DOM and canvas pieces shared by the widgets (the pixel arithmetic lives in buffers.js and colour.js).
import { rgbToRgba } from "./buffers.js";
import { paintPositions } from "./colour.js";

export function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

// The map's stage in `parent`: its canvas (counting paints in data-paints and maps in data-maps, which the browser
// tests and benchmarks read) and the progress bar over it.
export function mapStage(parent) {
  const stage = element("div", "xai-heatmap-stage", parent);
  const canvas = element("canvas", "xai-heatmap-canvas", stage);
  canvas.dataset.paints = "0";
  canvas.dataset.maps = "0";
  const progressBar = element("div", "xai-heatmap-progress", stage);
  return { stage, canvas, progressBar };
}

// An offscreen canvas from RGBA filled by fill(data); null for an empty size.
export function canvasOf(width, height, fill) {
  if (!width || !height) return null;
  const rgba = new ImageData(width, height);
  fill(rgba.data);
  const canvas = document.createElement("canvas");
  Object.assign(canvas, { width, height });
  canvas.getContext("2d").putImageData(rgba, 0, 0);
  return canvas;
}

// The picture trait (H×W×3 uint8) as a canvas, or null when it is missing or the wrong length.
export function pictureCanvas(bytes, height, width) {
  if (!height || !width || bytes.length !== height * width * 3) return null;
  return canvasOf(width, height, (data) => rgbToRgba(bytes, data));
}

// A map of colormap positions (uint8 per pixel) coloured with a 256×3 uint8 table.
export function colouredCanvas(positions, height, width, rgb) {
  return canvasOf(width, height, (data) => paintPositions(positions, rgb, data));
}

// The picture with the overlay blended on top, scaled to `size` pixels wide; counts paints in data-paints.
export function compose(canvas, { size, picture, overlay, opacity, smooth = true }) {
  const source = picture || overlay;
  const [height, width] = source ? [source.height, source.width] : [1, 1];
  const displayWidth = Math.max(1, Math.round(size));
  const displayHeight = Math.max(1, Math.round((size * height) / width));
  if (canvas.width !== displayWidth) canvas.width = displayWidth;
  if (canvas.height !== displayHeight) canvas.height = displayHeight;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = smooth;
  context.globalAlpha = 1;
  context.clearRect(0, 0, displayWidth, displayHeight);
  if (picture) context.drawImage(picture, 0, 0, displayWidth, displayHeight);
  if (overlay) {
    context.globalAlpha = picture ? opacity : 1;
    context.drawImage(overlay, 0, 0, displayWidth, displayHeight);
    context.globalAlpha = 1;
  }
  canvas.dataset.paints = String(Number(canvas.dataset.paints) + 1);
}

// Title, error box, status line and progress bar from the model's traits of those names. While a new result
// is computing (progress set) the canvas carries the class xai-stale: its stylesheet dims it after a short
// delay, so a quick answer does not flicker and a long one does not pass for current.
export function showStatus(model, { title, errorBox, status, progressBar, canvas }) {
  title.textContent = model.get("title");
  const message = model.get("error");
  errorBox.textContent = message;
  errorBox.style.display = message ? "block" : "none";
  status.textContent = model.get("status");
  const progress = model.get("progress");
  progressBar.style.display = progress === null || progress === undefined ? "none" : "block";
  progressBar.style.width = `${Math.round(100 * Math.max(0, Math.min(1, progress || 0)))}%`;
  canvas.style.opacity = message ? "0.4" : "";
  canvas.classList.toggle("xai-stale", !message && progress !== null && progress !== undefined);
}

// The widget model behind a widget-reference trait ("IPY_MODEL_<id>", e.g. a bqplot mark), or null.
export async function referenced(widgetModel, name) {
  const reference = widgetModel.get(name);
  const manager = widgetModel.widget_manager;
  if (typeof reference !== "string" || !manager) return null;
  try {
    return await manager.get_model(reference.replace(/^IPY_MODEL_/, ""));
  } catch {
    return null;
  }
}
