// Model changes arrive as a burst of events (one per trait): mark(what) collects them in `dirty` and runs
// flush() once for the whole burst, in a microtask (or through `schedule`, for tests).
export function coalescer(dirty, flush, schedule = queueMicrotask) {
  let scheduled = false;
  return (what) => {
    dirty.add(what);
    if (!scheduled) {
      scheduled = true;
      schedule(() => {
        scheduled = false;
        flush();
      });
    }
  };
}

// Subscribe callbacks to `change:<trait>` events from a table of [trait names, callback]; returns the
// function that unsubscribes them all (a widget's render() returns it as its clean-up).
export function subscribe(widgetModel, table) {
  const listeners = [];
  for (const [names, callback] of table) {
    for (const name of names) listeners.push([`change:${name}`, callback]);
  }
  for (const [event, callback] of listeners) widgetModel.on(event, callback);
  return () => {
    for (const [event, callback] of listeners) widgetModel.off(event, callback);
  };
}

// The widget model read through Python's defaults, for traits a saved widget state may have left out.
export function withDefaults(widgetModel, defaults) {
  return {
    get: (name) => {
      const value = widgetModel.get(name);
      return value === undefined ? defaults[name] : value;
    },
    on: (event, callback) => widgetModel.on(event, callback),
    off: (event, callback) => widgetModel.off(event, callback),
  };
}
