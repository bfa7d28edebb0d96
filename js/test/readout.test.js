import { describe, expect, test } from "vitest";
import { cellAt, format, readoutText } from "../lib/readout.js";

describe("format", () => {
  test("three significant digits, exponent notation outside [1e-3, 1e4)", () => {
    expect(format(0)).toBe("0");
    expect(format(0.5)).toBe("0.500");
    expect(format(-12.345)).toBe("-12.3");
    expect(format(1e-3)).toBe("0.00100");
    expect(format(9.99e-4)).toBe("9.99e-4");
    expect(format(12345)).toBe("1.23e+4");
    expect(format(Number.NaN)).toBe("NaN");
    expect(format(Number.NEGATIVE_INFINITY)).toBe("-Infinity");
  });
});

describe("cellAt", () => {
  test("maps box fractions to grid cells; the far edges belong to the last cell", () => {
    expect(cellAt(0, 0, 7, 7)).toEqual({ row: 0, column: 0 });
    expect(cellAt(0.5, 0.25, 4, 8)).toEqual({ row: 1, column: 4 });
    expect(cellAt(1, 1, 7, 7)).toEqual({ row: 6, column: 6 });
    expect(cellAt(-0.2, 1.3, 7, 7)).toEqual({ row: 6, column: 0 });
  });
});

describe("readoutText", () => {
  const values = Float32Array.from([1, 2, 3, 4]);

  test("names the map cell and its value", () => {
    expect(readoutText(values, 0.75, 0.75, [2, 2], [2, 2])).toBe("x 1, y 1: 4.00");
  });

  test("adds the picture pixel when the map is coarser than the picture", () => {
    expect(readoutText(values, 0.75, 0.25, [2, 2], [64, 32])).toBe("x 1, y 0 (image x 24, y 16): 2.00");
  });

  test("without a picture only the map cell is named", () => {
    expect(readoutText(values, 0, 0.9, [2, 2])).toBe("x 0, y 1: 3.00");
  });
});
