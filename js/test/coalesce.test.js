import { describe, expect, test, vi } from "vitest";
import { coalescer, subscribe, withDefaults } from "../lib/coalesce.js";

describe("coalescer", () => {
  test("a burst of marks runs one flush that sees every mark", async () => {
    const dirty = new Set();
    const seen = [];
    const mark = coalescer(dirty, () => {
      seen.push([...dirty].sort());
      dirty.clear();
    });
    mark("values");
    mark("picture");
    mark("values");
    expect(seen).toEqual([]);
    await Promise.resolve();
    expect(seen).toEqual([["picture", "values"]]);
    mark("text");
    await Promise.resolve();
    expect(seen).toEqual([["picture", "values"], ["text"]]);
  });

  test("schedules once per burst through the given scheduler", () => {
    const queue = [];
    const flush = vi.fn();
    const mark = coalescer(new Set(), flush, (job) => queue.push(job));
    mark("a");
    mark("b");
    expect(queue.length).toBe(1);
    queue.shift()();
    expect(flush).toHaveBeenCalledTimes(1);
    mark("c");
    expect(queue.length).toBe(1);
  });
});

// A stand-in for the widget model: get/on/off over a plain object.
function fakeModel(state) {
  const listeners = new Map();
  return {
    get: (name) => state[name],
    on: (event, callback) => listeners.set(event, [...(listeners.get(event) || []), callback]),
    off: (event, callback) =>
      listeners.set(
        event,
        (listeners.get(event) || []).filter((c) => c !== callback),
      ),
    emit: (event) => {
      for (const callback of listeners.get(event) || []) callback();
    },
  };
}

test("subscribe listens to change:<trait> for each name and its clean-up removes every listener", () => {
  const model = fakeModel({});
  const callback = vi.fn();
  const unsubscribe = subscribe(model, [[["a", "b"], callback]]);
  model.emit("change:a");
  model.emit("change:b");
  model.emit("change:c");
  expect(callback).toHaveBeenCalledTimes(2);
  unsubscribe();
  model.emit("change:a");
  expect(callback).toHaveBeenCalledTimes(2);
});

test("withDefaults fills only the traits the saved state left out", () => {
  const model = withDefaults(fakeModel({ opacity: 0, title: "" }), { opacity: 0.6, title: "t", size: 224 });
  expect(model.get("opacity")).toBe(0);
  expect(model.get("title")).toBe("");
  expect(model.get("size")).toBe(224);
});
