// CAManimPlayer front end (anywidget ESM). See xai_widgets/widgets/camanim_player.py for the traits.
//
// All frames (L×H×W uint8) arrive once as one binary buffer. Playing, stepping, changing the speed and
// dragging the scrubber happen here and send nothing to the kernel; the position is synced back (one message)
// once the scrubber has rested for SYNC_MS (after the pointer is released, when dragging). The ybROAD chart's cursor (a bqplot Lines model) is moved here without
// save_changes(), and a click on a point of the chart (bqplot Scatter selection) moves the scrubber.
// The film reuses the heatmap view's markup (.xai-heatmap, canvas.xai-heatmap-canvas with data-paints and
// data-maps), so the shared browser-test helpers read it; the root carries data-index (the shown layer) and
// data-cursor (the layer the ROAD cursor was last moved to).

import { bytesOf } from "../lib/buffers.js";
import { coalescer, subscribe, withDefaults } from "../lib/coalesce.js";
import {
  colouredCanvas,
  compose,
  element,
  mapStage,
  pictureCanvas,
  referenced,
  showStatus,
} from "../lib/dom.js";
import "./camanim_player.css";

const SYNC_MS = 400;
const SPEEDS = [1, 2, 4, 8, 12, 24];

const DEFAULTS = {
  frames_shape: [0, 0, 0],
  image_shape: [0, 0],
  names: [],
  captions: [],
  index: 0,
  best: -1,
  playing: false,
  fps: 4,
  title: "",
  colormap: "inferno",
  opacity: 0.6,
  size: 256,
  error: "",
  status: "",
  progress: null,
  _colormap_names: [],
  _road_cursor: null,
  _road_points: null,
};

function render({ model: widgetModel, el }) {
  const model = withDefaults(widgetModel, DEFAULTS);
  const root = element("div", "xai-camanim", el);
  const heat = element("div", "xai-heatmap", root);
  const title = element("div", "xai-heatmap-title", heat);
  const { canvas, progressBar } = mapStage(heat);
  const timeline = element("div", "xai-camanim-timeline", root);
  const back = element("button", "xai-camanim-back", timeline);
  back.textContent = "prev";
  back.title = "previous layer";
  const play = element("button", "xai-camanim-play", timeline);
  play.title = "play / pause";
  const forward = element("button", "xai-camanim-forward", timeline);
  forward.textContent = "next";
  forward.title = "next layer";
  const scrubber = element("input", "xai-camanim-scrubber", timeline);
  Object.assign(scrubber, { type: "range", min: "0", max: "0", step: "1", value: "0", title: "layer" });
  const speed = element("select", "xai-camanim-speed", timeline);
  speed.title = "layers per second";
  const label = element("div", "xai-camanim-label", root);
  const tools = element("div", "xai-camanim-tools", root);
  element("span", "", tools).textContent = "opacity";
  const opacityInput = element("input", "xai-camanim-opacity", tools);
  Object.assign(opacityInput, { type: "range", min: "0", max: "1", step: "0.01" });
  const colormapSelect = element("select", "xai-camanim-colormap", tools);
  colormapSelect.title = "colormap";
  const status = element("div", "xai-heatmap-status", root);
  const errorBox = element("div", "xai-heatmap-error", root);
  errorBox.setAttribute("role", "alert");

  let frames = new Uint8Array(0);
  let [layers, height, width] = [0, 0, 0];
  let picture = null; // canvas at the picture's resolution
  let coloured = []; // per layer: canvas of the coloured frame (built on first show)
  let tables = {};
  let index = 0;
  let playing = false;
  let fps = model.get("fps");
  let lastStep = 0;
  let animation = null;
  let syncTimer = null;
  let cursorModel = null;
  let dragging = false; // pointer held on the scrubber: sync once it is released
  const view = { opacity: model.get("opacity"), colormap: model.get("colormap") };

  function loadTables() {
    const bytes = bytesOf(widgetModel.get("_colormap_tables"));
    tables = {};
    colormapSelect.replaceChildren();
    model.get("_colormap_names").forEach((name, i) => {
      tables[name] = bytes.subarray(i * 768, (i + 1) * 768);
      element("option", "", colormapSelect).textContent = name;
    });
    colormapSelect.value = view.colormap;
    coloured = [];
  }

  function loadFrames() {
    [layers, height, width] = model.get("frames_shape");
    frames = bytesOf(widgetModel.get("frames"));
    if (frames.length !== layers * height * width) [frames, layers] = [new Uint8Array(0), 0];
    coloured = [];
    scrubber.max = String(Math.max(0, layers - 1));
    canvas.dataset.maps = String(Number(canvas.dataset.maps) + 1);
  }

  function loadPicture() {
    const [h, w] = model.get("image_shape");
    picture = pictureCanvas(bytesOf(widgetModel.get("image")), h, w);
  }

  function colouredFrame(i) {
    if (coloured[i]) return coloured[i];
    const table = tables[view.colormap] || Object.values(tables)[0];
    if (!table) return null;
    const offset = i * width * height;
    coloured[i] = colouredCanvas(frames.subarray(offset, offset + width * height), height, width, table);
    return coloured[i];
  }

  function paint() {
    const overlay = layers ? colouredFrame(index) : null;
    compose(canvas, { size: model.get("size"), picture, overlay, opacity: view.opacity });
  }

  function describe() {
    const names = model.get("names");
    const captions = model.get("captions");
    label.replaceChildren();
    if (!layers) return;
    const text = `${index + 1}/${layers}  ${names[index] || ""}  (${captions[index] || ""})`;
    element("span", "", label).textContent = text;
    if (index === model.get("best")) element("span", "best", label).textContent = "  best ybROAD";
  }

  function moveCursor() {
    if (!cursorModel || !layers) return;
    // local only: the kernel hears about the position once the scrubber rests (syncIndex)
    cursorModel.set("x", new Float64Array([index, index]));
    root.dataset.cursor = String(index);
  }

  function syncIndex() {
    clearTimeout(syncTimer);
    syncTimer = null;
    if (dragging) return;
    if (!playing && widgetModel.get("index") !== index) {
      widgetModel.set("index", index);
      widgetModel.save_changes();
    }
  }

  function show(i, { sync = true } = {}) {
    if (!layers) return;
    index = Math.max(0, Math.min(layers - 1, Math.round(i)));
    scrubber.value = String(index);
    root.dataset.index = String(index);
    describe();
    paint();
    moveCursor();
    if (sync) {
      clearTimeout(syncTimer);
      syncTimer = setTimeout(syncIndex, SYNC_MS);
    }
  }

  function tick(now) {
    if (!playing) return;
    if (now - lastStep >= 1000 / fps) {
      lastStep = now;
      show(index + 1 >= layers ? 0 : index + 1, { sync: false });
    }
    animation = requestAnimationFrame(tick);
  }

  function setPlaying(value, { save = true } = {}) {
    playing = Boolean(value) && layers > 1;
    play.textContent = playing ? "pause" : "play";
    root.dataset.playing = String(playing);
    cancelAnimationFrame(animation);
    if (playing) {
      lastStep = performance.now();
      animation = requestAnimationFrame(tick);
    }
    if (save && widgetModel.get("playing") !== playing) {
      widgetModel.set("playing", playing);
      if (!playing) widgetModel.set("index", index);
      widgetModel.save_changes();
    }
  }

  function syncSpeed() {
    speed.replaceChildren();
    const choices = SPEEDS.includes(fps) ? SPEEDS : [...SPEEDS, fps].sort((a, b) => a - b);
    for (const choice of choices) {
      const option = element("option", "", speed);
      option.value = String(choice);
      option.textContent = `${choice} / s`;
    }
    speed.value = String(fps);
  }

  function showText() {
    showStatus(model, { title, errorBox, status, progressBar, canvas });
  }

  // Model changes arrive as a burst of events (one per trait); coalesce them into one repaint.
  const dirty = new Set();
  const mark = coalescer(dirty, flush);
  function flush() {
    if (dirty.has("tables")) loadTables();
    if (dirty.has("picture")) loadPicture();
    if (dirty.has("frames")) loadFrames();
    if (dirty.has("index") || dirty.has("frames")) {
      index = Math.min(model.get("index"), Math.max(0, layers - 1));
    }
    dirty.clear();
    showText();
    if (layers) show(index, { sync: false });
    else paint();
  }

  const unsubscribe = subscribe(widgetModel, [
    [["_colormap_tables", "_colormap_names"], () => mark("tables")],
    [["image", "image_shape"], () => mark("picture")],
    [["frames", "frames_shape", "names", "captions"], () => mark("frames")],
    [
      ["index"],
      () => {
        if (widgetModel.get("index") !== index) mark("index");
      },
    ],
    [["best", "title", "error", "status", "progress", "size"], () => mark("text")],
    [["playing"], () => setPlaying(model.get("playing"), { save: false })],
    [
      ["fps"],
      () => {
        fps = model.get("fps");
        syncSpeed();
      },
    ],
    [
      ["opacity", "colormap"],
      () => {
        view.opacity = model.get("opacity");
        view.colormap = model.get("colormap");
        opacityInput.value = String(view.opacity);
        colormapSelect.value = view.colormap;
        coloured = [];
        mark("text");
      },
    ],
  ]);

  // The timeline and display controls: local, nothing goes to the kernel while they are used.
  scrubber.addEventListener("pointerdown", () => {
    dragging = true;
  });
  const release = () => {
    if (!dragging) return;
    dragging = false;
    clearTimeout(syncTimer);
    syncTimer = setTimeout(syncIndex, SYNC_MS);
  };
  window.addEventListener("pointerup", release);
  scrubber.addEventListener("input", () => {
    setPlaying(false, { save: playing });
    show(Number(scrubber.value));
  });
  back.addEventListener("click", () => {
    setPlaying(false, { save: playing });
    show(index - 1);
  });
  forward.addEventListener("click", () => {
    setPlaying(false, { save: playing });
    show(index + 1);
  });
  play.addEventListener("click", () => setPlaying(!playing));
  // Keyboard, with the player focused (click it or Tab to it): arrows step through the layers, Home/End jump
  // to the first/last, Space plays or pauses. The scrubber and the sliders take arrows themselves.
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true"); // JupyterLab's own arrow/space shortcuts stay off
  root.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    const steps = { ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1 };
    const goals = { Home: () => 0, End: () => layers - 1 };
    if (event.key === " ") setPlaying(!playing);
    else if (event.key in steps || event.key in goals) {
      setPlaying(false, { save: playing });
      show(event.key in steps ? index + steps[event.key] : goals[event.key]());
    } else return;
    event.preventDefault();
    event.stopPropagation();
  });
  speed.addEventListener("change", () => {
    fps = Number(speed.value);
  });
  opacityInput.addEventListener("input", () => {
    view.opacity = Number(opacityInput.value);
    paint();
  });
  colormapSelect.addEventListener("change", () => {
    view.colormap = colormapSelect.value;
    coloured = [];
    paint();
  });

  // The ybROAD chart: move its cursor here; a click on a point (bqplot selection) moves the scrubber.
  let pointsModel = null;
  const onSelected = () => {
    const selected = pointsModel.get("selected");
    if (selected?.length) {
      setPlaying(false, { save: playing });
      show(Number(selected[selected.length - 1]));
    }
  };
  const connectChart = async () => {
    cursorModel = await referenced(widgetModel, "_road_cursor");
    if (pointsModel) pointsModel.off("change:selected", onSelected);
    pointsModel = await referenced(widgetModel, "_road_points");
    if (pointsModel) pointsModel.on("change:selected", onSelected);
    moveCursor();
  };
  widgetModel.on("change:_road_cursor change:_road_points", connectChart);
  connectChart();

  opacityInput.value = String(view.opacity);
  syncSpeed();
  for (const what of ["tables", "picture", "frames", "index"]) dirty.add(what);
  flush();
  setPlaying(model.get("playing"), { save: false });

  return () => {
    cancelAnimationFrame(animation);
    clearTimeout(syncTimer);
    window.removeEventListener("pointerup", release);
    unsubscribe();
    widgetModel.off("change:_road_cursor change:_road_points", connectChart);
    if (pointsModel) pointsModel.off("change:selected", onSelected);
  };
}

export default { render };
