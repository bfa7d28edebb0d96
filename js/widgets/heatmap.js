// HeatmapView front end (anywidget ESM). See xai_widgets/widgets/heatmap.py for the traits.
//
// The picture (H×W×3 uint8) and the map (h×w float16, times values_scale) arrive as binary buffers.
// Colormap, opacity, clipping, smoothing and the readout under the mouse are computed here; the view's own
// controls never call model.save_changes(), so using them sends nothing to the kernel.
// For tests and benchmarks the canvas carries data-paints (paint count), data-maps (maps received),
// data-paint-ms (last paint's duration), data-painted-at (performance.now() at the end of the last paint) and
// data-map-painted-at (the same, for the first paint of the latest map).

import { bytesOf, decodeHalf } from "../lib/buffers.js";
import { coalescer, subscribe, withDefaults } from "../lib/coalesce.js";
import { colorbarRow, colourLimit, positionsOf, sortedMagnitudes } from "../lib/colour.js";
import { colouredCanvas, compose, element, mapStage, pictureCanvas, showStatus } from "../lib/dom.js";
import { format, readoutText } from "../lib/readout.js";
import "./heatmap.css";

// Python's defaults, for traits a saved widget state may have left out.
const DEFAULTS = {
  image_shape: [0, 0],
  values_shape: [0, 0],
  values_scale: 1,
  signed: true,
  title: "",
  colormap: "auto",
  opacity: 0.6,
  clip: "percentile",
  percentile: 99.5,
  smoothing: "bilinear",
  size: 224,
  show_controls: true,
  error: "",
  status: "",
  progress: null,
  _colormap_names: [],
  _colormap_kinds: [],
};

function render({ model: widgetModel, el }) {
  const model = withDefaults(widgetModel, DEFAULTS);
  const root = element("div", "xai-heatmap", el);
  const title = element("div", "xai-heatmap-title", root);
  const tools = element("div", "xai-heatmap-tools", root);
  const colormapSelect = element("select", "xai-heatmap-colormap", tools);
  colormapSelect.title = "colormap";
  const opacityInput = element("input", "xai-heatmap-opacity", tools);
  Object.assign(opacityInput, { type: "range", min: "0", max: "1", step: "0.01", title: "opacity" });
  const clipSelect = element("select", "xai-heatmap-clip", tools);
  clipSelect.title = "colour range";
  const smoothingSelect = element("select", "xai-heatmap-smoothing", tools);
  smoothingSelect.title = "scaling";
  for (const mode of ["bilinear", "nearest"]) element("option", "", smoothingSelect).textContent = mode;
  const saveButton = element("button", "xai-heatmap-save", tools);
  saveButton.textContent = "PNG";
  saveButton.title = "save the view as PNG";
  const { canvas, progressBar } = mapStage(root);
  const bar = element("div", "xai-heatmap-bar", root);
  const barLow = element("span", "", bar);
  const barCanvas = element("canvas", "xai-heatmap-colorbar", bar);
  Object.assign(barCanvas, { width: 128, height: 8 });
  const barHigh = element("span", "", bar);
  const readout = element("div", "xai-heatmap-readout", root);
  const status = element("div", "xai-heatmap-status", root);
  const errorBox = element("div", "xai-heatmap-error", root);
  errorBox.setAttribute("role", "alert");

  // Display choices: start from the model, then owned by the view (Python changes still arrive).
  const view = {
    colormap: model.get("colormap"),
    opacity: model.get("opacity"),
    clip: model.get("clip"),
    percentile: model.get("percentile"),
    smoothing: model.get("smoothing"),
  };
  let picture = null; // canvas at the picture's resolution
  let values = null; // Float32Array, original scale
  let mapShape = [0, 0];
  let sorted = null; // sorted |values|, built on first percentile use
  let overlay = null; // canvas at the map's resolution, coloured
  let limit = 1;
  let tables = null;

  function loadTables() {
    const bytes = bytesOf(model.get("_colormap_tables"));
    const names = model.get("_colormap_names");
    const kinds = model.get("_colormap_kinds");
    tables = {};
    names.forEach((name, i) => {
      tables[name] = { kind: kinds[i], rgb: bytes.subarray(i * 768, (i + 1) * 768) };
    });
    colormapSelect.replaceChildren();
    for (const name of ["auto", ...names]) element("option", "", colormapSelect).textContent = name;
  }

  function colormapName() {
    if (view.colormap !== "auto" && tables[view.colormap]) return view.colormap;
    return model.get("signed") ? "RdBu" : "inferno";
  }

  function loadPicture() {
    const [height, width] = model.get("image_shape");
    picture = pictureCanvas(bytesOf(model.get("image")), height, width);
  }

  function loadValues() {
    const [height, width] = model.get("values_shape");
    sorted = null;
    mapShape = [height, width];
    values = decodeHalf(bytesOf(model.get("values")), height * width, model.get("values_scale"));
    if (values) canvas.dataset.maps = String(Number(canvas.dataset.maps) + 1);
  }

  function colour() {
    overlay = null;
    if (!values) return;
    if (view.clip === "percentile" && !sorted) sorted = sortedMagnitudes(values);
    limit = colourLimit(values, { clip: view.clip, percentile: view.percentile, sorted });
    const table = tables[colormapName()];
    const diverging = table.kind === "diverging";
    overlay = colouredCanvas(positionsOf(values, limit, diverging), mapShape[0], mapShape[1], table.rgb);
    drawColorbar(table, diverging);
  }

  function drawColorbar(table, diverging) {
    const context = barCanvas.getContext("2d");
    const strip = new ImageData(colorbarRow(table.rgb, barCanvas.width), barCanvas.width, 1);
    for (let y = 0; y < barCanvas.height; y++) context.putImageData(strip, 0, y);
    barLow.textContent = diverging ? format(-limit) : "0";
    barHigh.textContent = (diverging ? "" : "|v| ") + format(limit);
  }

  function paint() {
    const start = performance.now();
    const smooth = view.smoothing !== "nearest";
    compose(canvas, { size: model.get("size"), picture, overlay, opacity: view.opacity, smooth });
    bar.style.visibility = overlay ? "visible" : "hidden";
    const end = performance.now();
    canvas.dataset.paintMs = (end - start).toFixed(3);
    canvas.dataset.paintedAt = end.toFixed(3);
  }

  function syncControls() {
    colormapSelect.value = view.colormap;
    opacityInput.value = String(view.opacity);
    const clipValue = view.clip === "symmetric" ? "symmetric" : `p${view.percentile}`;
    const choices = ["symmetric", "p99.9", "p99.5", "p99", "p95", "p90"];
    if (!choices.includes(clipValue)) choices.push(clipValue);
    clipSelect.replaceChildren();
    for (const choice of choices) {
      const option = element("option", "", clipSelect);
      option.value = choice;
      option.textContent = choice === "symmetric" ? "max |v|" : `${choice.slice(1)}th pct`;
    }
    clipSelect.value = clipValue;
    smoothingSelect.value = view.smoothing;
  }

  function showText() {
    showStatus(model, { title, errorBox, status, progressBar, canvas });
    tools.style.display = model.get("show_controls") ? "flex" : "none";
  }

  // Model changes arrive as a burst of events (one per trait); coalesce them into one repaint.
  const dirty = new Set();
  const mark = coalescer(dirty, flush);
  function flush() {
    if (dirty.has("tables")) loadTables();
    if (dirty.has("picture")) loadPicture();
    if (dirty.has("values")) loadValues();
    if (dirty.has("tables") || dirty.has("controls")) syncControls();
    if (["tables", "values", "colour"].some((d) => dirty.has(d))) colour();
    showText();
    const newMap = dirty.has("values") && values !== null;
    dirty.clear();
    paint();
    if (newMap) canvas.dataset.mapPaintedAt = canvas.dataset.paintedAt;
  }

  const unsubscribe = subscribe(widgetModel, [
    [["_colormap_tables"], () => mark("tables")],
    [["image", "image_shape"], () => mark("picture")],
    [["values", "values_shape", "values_scale"], () => mark("values")],
    [["signed"], () => mark("colour")],
    [["title", "error", "status", "progress", "show_controls", "size"], () => mark("text")],
    ...["colormap", "opacity", "clip", "percentile", "smoothing"].map((name) => [
      [name],
      () => {
        view[name] = model.get(name);
        mark("controls");
        mark("colour");
      },
    ]),
  ]);

  // The view's own controls: local only, never model.save_changes().
  colormapSelect.addEventListener("change", () => {
    view.colormap = colormapSelect.value;
    colour();
    paint();
  });
  opacityInput.addEventListener("input", () => {
    view.opacity = Number(opacityInput.value);
    paint();
  });
  clipSelect.addEventListener("change", () => {
    if (clipSelect.value === "symmetric") view.clip = "symmetric";
    else [view.clip, view.percentile] = ["percentile", Number(clipSelect.value.slice(1))];
    colour();
    paint();
  });
  smoothingSelect.addEventListener("change", () => {
    view.smoothing = smoothingSelect.value;
    paint();
  });
  saveButton.addEventListener("click", () => {
    canvas.toBlob((blob) => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `${(model.get("title") || "heatmap").replace(/[^\w.-]+/g, "_")}.png`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    }, "image/png");
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!values) return;
    const box = canvas.getBoundingClientRect();
    const fx = (event.clientX - box.left) / box.width;
    const fy = (event.clientY - box.top) / box.height;
    const pictureShape = picture ? [picture.height, picture.width] : null;
    readout.textContent = readoutText(values, fx, fy, mapShape, pictureShape);
  });
  canvas.addEventListener("mouseleave", () => {
    readout.textContent = "";
  });

  for (const what of ["tables", "picture", "values", "controls"]) dirty.add(what);
  flush();

  return unsubscribe;
}

export default { render };
