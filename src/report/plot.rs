//! Pictures without a plotting stack: an RGB canvas, a built-in 5×7 bitmap font, and panels with
//! ticks, labels, points, lines, bars and legends, written as PNG (atomically). Enough for scatter plots
//! of samples, mass-versus-time curves and histograms against exact densities.

use std::path::Path;

use crate::error::{Error, Result};

/// Colours for series, in order.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];
/// Black.
pub const BLACK: [u8; 3] = [0, 0, 0];
/// Mid grey (frames, grid).
pub const GREY: [u8; 3] = [150, 150, 150];

/// A white RGB image to draw on.
#[derive(Clone, Debug)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas of `width × height` pixels.
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas { width, height, pixels: vec![255; width as usize * height as usize * 3] }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Blend `color` into pixel (x, y) with opacity `alpha` ∈ [0, 1]; off-canvas pixels are ignored.
    pub fn blend(&mut self, x: i64, y: i64, color: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = ((y as u32 * self.width + x as u32) * 3) as usize;
        for c in 0..3 {
            let old = self.pixels[i + c] as f32;
            self.pixels[i + c] = (old + alpha * (color[c] as f32 - old)).round() as u8;
        }
    }

    /// Set pixel (x, y).
    pub fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        self.blend(x, y, color, 1.0);
    }

    /// Fill a rectangle `[x0, x1) × [y0, y1)`.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: [u8; 3], alpha: f32) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.blend(x, y, color, alpha);
            }
        }
    }

    /// Copy a grey-scale image (`w × h`, values in [0, 1]) to (x0, y0), each pixel as a `scale × scale` block.
    pub fn gray_image(&mut self, x0: i64, y0: i64, w: usize, h: usize, values: &[f32], scale: u32) {
        let s = scale as i64;
        for r in 0..h {
            for c in 0..w {
                let v = (values[r * w + c].clamp(0.0, 1.0) * 255.0).round() as u8;
                self.fill_rect(x0 + c as i64 * s, y0 + r as i64 * s, x0 + (c as i64 + 1) * s, y0 + (r as i64 + 1) * s, [v, v, v], 1.0);
            }
        }
    }

    /// A line from (x0, y0) to (x1, y1), `width` pixels thick.
    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, color: [u8; 3], width: u32) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        let half = width as i64 / 2;
        for k in 0..=steps {
            let f = k as f64 / steps as f64;
            let x = (x0 + f * (x1 - x0)).round() as i64;
            let y = (y0 + f * (y1 - y0)).round() as i64;
            for dy in -half..=(width as i64 - 1 - half) {
                for dx in -half..=(width as i64 - 1 - half) {
                    self.set(x + dx, y + dy, color);
                }
            }
        }
    }

    /// Text with its top-left corner at (x, y), 5×7 glyphs on a 6-pixel pitch, scaled by `scale`.
    pub fn text_scaled(&mut self, x: i64, y: i64, s: &str, color: [u8; 3], scale: u32) {
        let sc = scale as i64;
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            let gx = x + k as i64 * 6 * sc;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill_rect(gx + col * sc, y + row as i64 * sc, gx + (col + 1) * sc, y + (row as i64 + 1) * sc, color, 1.0);
                    }
                }
            }
        }
    }

    /// Text at scale 1.
    pub fn text(&mut self, x: i64, y: i64, s: &str, color: [u8; 3]) {
        self.text_scaled(x, y, s, color, 1);
    }

    /// Width in pixels of `s` at `scale`.
    pub fn text_width(s: &str, scale: u32) -> i64 {
        (s.chars().count() as i64 * 6 - 1).max(0) * scale as i64
    }

    /// A panel occupying `rect = (x0, y0, x1, y1)` pixels that maps data ranges `xr`, `yr` to it; draws
    /// the frame, ticks with labels, the title above and the axis labels.
    pub fn panel(&mut self, rect: (u32, u32, u32, u32), xr: (f64, f64), yr: (f64, f64), title: &str, xlabel: &str, ylabel: &str) -> Panel {
        let (x0, y0, x1, y1) = rect;
        let fix = |r: (f64, f64)| if r.1 > r.0 { r } else { (r.0 - 0.5, r.0 + 0.5) };
        let p = Panel { x0: x0 as f64, y0: y0 as f64, x1: x1 as f64, y1: y1 as f64, xr: fix(xr), yr: fix(yr) };
        for (a, b, c, d) in [(x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1)] {
            self.line(a as f64, b as f64, c as f64, d as f64, BLACK, 1);
        }
        for t in nice_ticks(p.xr.0, p.xr.1, 6) {
            let px = p.px(t);
            self.line(px, p.y1, px, p.y1 - 4.0, BLACK, 1);
            let s = fmt_tick(t);
            self.text(px as i64 - Canvas::text_width(&s, 1) / 2, y1 as i64 + 4, &s, BLACK);
        }
        for t in nice_ticks(p.yr.0, p.yr.1, 6) {
            let py = p.py(t);
            self.line(p.x0, py, p.x0 + 4.0, py, BLACK, 1);
            let s = fmt_tick(t);
            self.text(x0 as i64 - 4 - Canvas::text_width(&s, 1), py as i64 - 3, &s, BLACK);
        }
        let cx = (x0 + x1) as i64 / 2;
        self.text(cx - Canvas::text_width(title, 1) / 2, y0 as i64 - 12, title, BLACK);
        self.text(cx - Canvas::text_width(xlabel, 1) / 2, y1 as i64 + 15, xlabel, BLACK);
        // The y label goes above the tick labels, left-aligned with the frame.
        self.text(x0 as i64 - Canvas::text_width(ylabel, 1).min(x0 as i64), y0 as i64 - 24, ylabel, BLACK);
        p
    }

    /// Encode as PNG and write atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        image::write_buffer_with_format(
            &mut std::io::Cursor::new(&mut bytes),
            &self.pixels,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::Image { path: path.to_path_buf(), reason: e.to_string() })?;
        crate::io::write_atomic(path, &bytes)
    }

    /// The raw RGB bytes, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }
}

/// A mapping from data coordinates to a rectangle of a [`Canvas`]. Drawing clips to the rectangle.
#[derive(Clone, Copy, Debug)]
pub struct Panel {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
    xr: (f64, f64),
    yr: (f64, f64),
}

impl Panel {
    /// Pixel column of data x.
    pub fn px(&self, x: f64) -> f64 {
        self.x0 + (x - self.xr.0) / (self.xr.1 - self.xr.0) * (self.x1 - self.x0)
    }

    /// Pixel row of data y.
    pub fn py(&self, y: f64) -> f64 {
        self.y1 - (y - self.yr.0) / (self.yr.1 - self.yr.0) * (self.y1 - self.y0)
    }

    fn inside(&self, px: f64, py: f64) -> bool {
        px >= self.x0 && px <= self.x1 && py >= self.y0 && py <= self.y1
    }

    /// Filled dots of `radius` pixels, half transparent so density shows.
    pub fn points(&self, c: &mut Canvas, xs: &[f64], ys: &[f64], color: [u8; 3], radius: u32) {
        let r = radius as i64;
        for (&x, &y) in xs.iter().zip(ys) {
            let (px, py) = (self.px(x), self.py(y));
            if !px.is_finite() || !py.is_finite() || !self.inside(px, py) {
                continue;
            }
            for dy in -r..=r {
                for dx in -r..=r {
                    if dx * dx + dy * dy <= r * r && self.inside(px + dx as f64, py + dy as f64) {
                        c.blend(px.round() as i64 + dx, py.round() as i64 + dy, color, 0.45);
                    }
                }
            }
        }
    }

    /// A polyline through the points, clipped to the panel.
    pub fn line(&self, c: &mut Canvas, xs: &[f64], ys: &[f64], color: [u8; 3], width: u32) {
        for k in 1..xs.len().min(ys.len()) {
            let (ax, ay, bx, by) = (self.px(xs[k - 1]), self.py(ys[k - 1]), self.px(xs[k]), self.py(ys[k]));
            if ![ax, ay, bx, by].iter().all(|v| v.is_finite()) {
                continue;
            }
            let clamp = |v: f64, lo: f64, hi: f64| v.clamp(lo, hi);
            c.line(
                clamp(ax, self.x0, self.x1),
                clamp(ay, self.y0, self.y1),
                clamp(bx, self.x0, self.x1),
                clamp(by, self.y0, self.y1),
                color,
                width,
            );
        }
    }

    /// A horizontal line at data y across the panel.
    pub fn hline(&self, c: &mut Canvas, y: f64, color: [u8; 3], dashed: bool) {
        let py = self.py(y);
        if !(py >= self.y0 && py <= self.y1) {
            return;
        }
        let mut x = self.x0;
        while x < self.x1 {
            let end = if dashed { (x + 6.0).min(self.x1) } else { self.x1 };
            c.line(x, py, end, py, color, 1);
            x = end + if dashed { 4.0 } else { 1.0 };
        }
    }

    /// Histogram bars: bin k spans `edges[k]..edges[k+1]` with height `heights[k]`, half transparent.
    pub fn bars(&self, c: &mut Canvas, edges: &[f64], heights: &[f64], color: [u8; 3]) {
        for (k, &h) in heights.iter().enumerate() {
            if k + 1 >= edges.len() || !h.is_finite() {
                continue;
            }
            let xa = self.px(edges[k]).clamp(self.x0, self.x1);
            let xb = self.px(edges[k + 1]).clamp(self.x0, self.x1);
            let ya = self.py(h).clamp(self.y0, self.y1);
            let yb = self.py(self.yr.0.max(0.0).min(self.yr.1)).clamp(self.y0, self.y1);
            c.fill_rect(xa.round() as i64, ya.min(yb).round() as i64, xb.round() as i64, ya.max(yb).round() as i64, color, 0.45);
        }
    }

    /// A legend box in the panel's top-right corner.
    pub fn legend(&self, c: &mut Canvas, entries: &[(&str, [u8; 3])]) {
        let w = entries.iter().map(|(s, _)| Canvas::text_width(s, 1)).max().unwrap_or(0) + 22;
        let (x, y) = (self.x1 as i64 - w - 6, self.y0 as i64 + 6);
        c.fill_rect(x - 3, y - 3, x + w + 3, y + entries.len() as i64 * 12 + 1, [255, 255, 255], 0.85);
        for (k, (s, col)) in entries.iter().enumerate() {
            let yy = y + k as i64 * 12;
            c.fill_rect(x, yy + 1, x + 14, yy + 6, *col, 1.0);
            c.text(x + 20, yy, s, BLACK);
        }
    }
}

/// About `target` round tick positions covering `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return Vec::new();
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * step {
        out.push(if t.abs() < 1e-12 * step { 0.0 } else { t });
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// The 5×7 bitmap of a character (rows top to bottom, bit 4 = leftmost column); unknown characters draw
/// as '?'.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        ' ' => [0; 7],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '*' => [0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0],
        '|' => [0x04; 7],
        '!' => [0x04, 0x04, 0x04, 0x04, 0x04, 0, 0x04],
        '^' => [0x04, 0x0A, 0x11, 0, 0, 0, 0],
        '\'' => [0x04, 0x04, 0, 0, 0, 0, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '~' => [0, 0, 0x08, 0x15, 0x02, 0, 0],
        'β' => [0x0E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E], // drawn like B-with-tail; readable as beta
        'η' => [0, 0, 0x16, 0x19, 0x11, 0x11, 0x01],
        'λ' => [0x08, 0x04, 0x04, 0x0A, 0x0A, 0x11, 0x11],
        'τ' => [0, 0, 0x1F, 0x04, 0x04, 0x04, 0x03],
        'ε' => [0, 0, 0x0F, 0x10, 0x0E, 0x10, 0x0F],
        'ρ' => [0, 0, 0x0E, 0x11, 0x11, 0x1E, 0x10],
        'π' => [0, 0, 0x1F, 0x0A, 0x0A, 0x0A, 0x0A],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = nice_ticks(0.0, 1.0, 5);
        let want = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(t.len(), want.len());
        assert!(t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12));
        let t = nice_ticks(-3.2, 7.9, 6);
        assert!(t.first().unwrap() >= &-3.2 && t.last().unwrap() <= &7.9 && t.len() >= 4);
        assert!(nice_ticks(1.0, 1.0, 5).is_empty());
    }

    #[test]
    fn png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let mut c = Canvas::new(120, 80);
        let p = c.panel((30, 20, 110, 60), (0.0, 1.0), (0.0, 1.0), "t", "x", "y");
        p.points(&mut c, &[0.5], &[0.5], PALETTE[0], 2);
        c.save_png(&path).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (120, 80));
    }
}
