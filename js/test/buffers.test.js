import { describe, expect, test } from "vitest";
import { bytesOf, decodeHalf, HALF, rgbToRgba } from "../lib/buffers.js";

describe("bytesOf", () => {
  test("reads a DataView, a typed array at an offset and an ArrayBuffer as the same bytes", () => {
    const buffer = new Uint8Array([9, 1, 2, 3, 9]).buffer;
    expect([...bytesOf(new DataView(buffer, 1, 3))]).toEqual([1, 2, 3]);
    expect([...bytesOf(new Uint16Array(buffer, 0, 2))]).toEqual([9, 1, 2, 3]);
    expect([...bytesOf(buffer)]).toEqual([9, 1, 2, 3, 9]);
  });

  test("a missing or foreign value is empty", () => {
    expect(bytesOf(null).length).toBe(0);
    expect(bytesOf(undefined).length).toBe(0);
    expect(bytesOf("text").length).toBe(0);
  });
});

describe("float16", () => {
  test("known bit patterns", () => {
    expect(HALF[0x3c00]).toBe(1);
    expect(HALF[0xc000]).toBe(-2);
    expect(HALF[0x3555]).toBeCloseTo(0.33325195, 8);
    expect(HALF[0x7bff]).toBe(65504);
    expect(HALF[0x0001]).toBe(2 ** -24);
    expect(HALF[0x0400]).toBe(2 ** -14);
    expect(HALF[0x7c00]).toBe(Number.POSITIVE_INFINITY);
    expect(HALF[0xfc00]).toBe(Number.NEGATIVE_INFINITY);
    expect(HALF[0x7e00]).toBeNaN();
    expect(Object.is(HALF[0x8000], -0)).toBe(true);
  });

  test("every finite pattern is monotone in its magnitude bits", () => {
    let violations = 0;
    for (let h = 1; h < 0x7c00; h++) if (!(HALF[h] > HALF[h - 1])) violations++;
    expect(violations).toBe(0);
  });

  test("decodeHalf reads little-endian values at an odd offset and applies the scale", () => {
    const bytes = new Uint8Array([0xff, 0x00, 0x3c, 0x00, 0xc0, 0x00, 0x00]).subarray(1, 7);
    expect([...decodeHalf(bytes, 3, 0.5)]).toEqual([0.5, -1, 0]);
  });

  test("decodeHalf refuses a length that is not two bytes per value", () => {
    expect(decodeHalf(new Uint8Array(5), 3)).toBeNull();
    expect(decodeHalf(new Uint8Array(0), 0)).toBeNull();
  });
});

test("rgbToRgba packs RGB into opaque RGBA and checks the sizes", () => {
  const rgba = new Uint8ClampedArray(8);
  expect(rgbToRgba(new Uint8Array([1, 2, 3, 4, 5, 6]), rgba)).toBe(true);
  expect([...rgba]).toEqual([1, 2, 3, 255, 4, 5, 6, 255]);
  expect(rgbToRgba(new Uint8Array(3), rgba)).toBe(false);
});
