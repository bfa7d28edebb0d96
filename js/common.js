// Helpers shared by the widgets' front ends. xai_widgets/widgets/_assets.py puts this file in front of each
// widget module (anywidget loads one ESM text per widget), so these names are plain module-level functions.

// A binary trait arrives as a DataView (live kernel) or ArrayBuffer/typed array (restored state).
function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return new Uint8Array(0);
}

function element(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

// The widget model read through Python's defaults, for traits a saved widget state may have left out.
function withDefaults(widgetModel, defaults) {
  return {
    get: (name) => {
      const value = widgetModel.get(name);
      return value === undefined ? defaults[name] : value;
    },
    on: (event, callback) => widgetModel.on(event, callback),
    off: (event, callback) => widgetModel.off(event, callback),
  };
}

// An offscreen canvas from RGBA filled by fill(data); null for an empty size.
function canvasOf(width, height, fill) {
  if (!width || !height) return null;
  const rgba = new ImageData(width, height);
  fill(rgba.data);
  const canvas = document.createElement("canvas");
  Object.assign(canvas, { width, height });
  canvas.getContext("2d").putImageData(rgba, 0, 0);
  return canvas;
}

// The picture trait (H×W×3 uint8) as a canvas, or null when it is missing or the wrong length.
function pictureCanvas(bytes, height, width) {
  if (!height || !width || bytes.length !== height * width * 3) return null;
  return canvasOf(width, height, (data) => {
    for (let i = 0, j = 0; i < bytes.length; i += 3, j += 4) {
      data[j] = bytes[i];
      data[j + 1] = bytes[i + 1];
      data[j + 2] = bytes[i + 2];
      data[j + 3] = 255;
    }
  });
}

// A map of colormap positions (uint8 per pixel) coloured with a 256×3 uint8 table.
function colouredCanvas(positions, height, width, rgb) {
  return canvasOf(width, height, (data) => {
    for (let p = 0; p < width * height; p++) {
      const k = positions[p] * 3;
      data[4 * p] = rgb[k];
      data[4 * p + 1] = rgb[k + 1];
      data[4 * p + 2] = rgb[k + 2];
      data[4 * p + 3] = 255;
    }
  });
}

// The picture with the overlay blended on top, scaled to `size` pixels wide; counts paints in data-paints.
function compose(canvas, { size, picture, overlay, opacity, smooth = true }) {
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

// Title, error box, status line and progress bar from the model's traits of those names.
function showStatus(model, { title, errorBox, status, progressBar, canvas }) {
  title.textContent = model.get("title");
  const message = model.get("error");
  errorBox.textContent = message;
  errorBox.style.display = message ? "block" : "none";
  status.textContent = model.get("status");
  const progress = model.get("progress");
  progressBar.style.display = progress === null || progress === undefined ? "none" : "block";
  progressBar.style.width = `${Math.round(100 * Math.max(0, Math.min(1, progress || 0)))}%`;
  canvas.style.opacity = message ? "0.4" : "1";
}

// Model changes arrive as a burst of events (one per trait): mark(what) collects them in `dirty` and runs
// flush() once, in a microtask.
function coalescer(dirty, flush) {
  let scheduled = false;
  return (what) => {
    dirty.add(what);
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(() => {
        scheduled = false;
        flush();
      });
    }
  };
}

// Subscribe callbacks to `change:<trait>` events; returns the function that unsubscribes them all.
function subscribe(widgetModel, table) {
  const listeners = [];
  for (const [names, callback] of table) {
    for (const name of names) listeners.push([`change:${name}`, callback]);
  }
  for (const [event, callback] of listeners) widgetModel.on(event, callback);
  return () => {
    for (const [event, callback] of listeners) widgetModel.off(event, callback);
  };
}
