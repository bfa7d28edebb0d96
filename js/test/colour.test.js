import { describe, expect, test } from "vitest";
import {
  colorbarRow,
  colourLimit,
  paintPositions,
  percentileOf,
  positionsOf,
  sortedMagnitudes,
} from "../lib/colour.js";

describe("percentileOf", () => {
  test("interpolates linearly between order statistics, as numpy.percentile", () => {
    const sorted = [1, 2, 3, 4];
    expect(percentileOf(sorted, 0)).toBe(1);
    expect(percentileOf(sorted, 50)).toBe(2.5);
    expect(percentileOf(sorted, 100)).toBe(4);
    // numpy.percentile([1, 2, 3, 4], 99.5) == 3.985
    expect(percentileOf(sorted, 99.5)).toBeCloseTo(3.985, 12);
    expect(percentileOf([], 50)).toBe(0);
  });
});

describe("colourLimit", () => {
  const values = Float32Array.from([-8, 1, 2, 3]);

  test("symmetric clipping is max |v|", () => {
    expect(colourLimit(values, { clip: "symmetric" })).toBe(8);
  });

  test("percentile clipping reads |v| (sorted once by the caller, or here)", () => {
    expect([...sortedMagnitudes(values)]).toEqual([1, 2, 3, 8]);
    expect(colourLimit(values, { clip: "percentile", percentile: 50 })).toBe(2.5);
    const sorted = sortedMagnitudes(values);
    expect(colourLimit(values, { clip: "percentile", percentile: 100, sorted })).toBe(8);
  });

  test("an all-zero or non-finite range falls back to 1", () => {
    expect(colourLimit(new Float32Array(4), { clip: "symmetric" })).toBe(1);
    expect(colourLimit(Float32Array.from([Number.NaN]), { clip: "symmetric" })).toBe(1);
    expect(colourLimit(Float32Array.from([Number.POSITIVE_INFINITY]), { clip: "symmetric" })).toBe(1);
  });
});

describe("positionsOf", () => {
  const values = Float32Array.from([-4, -2, 0, 2, 4, 9, Number.NaN]);

  test("diverging: -limit → 0, 0 → middle, +limit → 255, saturating beyond", () => {
    expect([...positionsOf(values, 4, true)]).toEqual([0, 64, 128, 191, 255, 255, 128]);
  });

  test("sequential: |v| from 0 to the limit", () => {
    expect([...positionsOf(values, 4, false)]).toEqual([255, 128, 0, 128, 255, 255, 0]);
  });
});

test("paintPositions looks each position up in the 256×3 table", () => {
  const rgb = new Uint8Array(768);
  for (let k = 0; k < 256; k++) rgb.set([k, 255 - k, 7], 3 * k);
  const rgba = new Uint8ClampedArray(8);
  paintPositions(Uint8Array.from([0, 200]), rgb, rgba);
  expect([...rgba]).toEqual([0, 255, 7, 255, 200, 55, 7, 255]);
});

test("colorbarRow runs through the table from its first to its last entry", () => {
  const rgb = new Uint8Array(768);
  for (let k = 0; k < 256; k++) rgb.set([k, k, k], 3 * k);
  const row = colorbarRow(rgb, 128);
  expect(row.length).toBe(512);
  expect([...row.subarray(0, 4)]).toEqual([0, 0, 0, 255]);
  expect([...row.subarray(508, 512)]).toEqual([255, 255, 255, 255]);
  for (let x = 1; x < 128; x++) expect(row[4 * x] >= row[4 * (x - 1)]).toBe(true);
});
