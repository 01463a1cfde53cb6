//! PNG plots of the saved results, drawn without a plotting library: a small RGB canvas
//! (lines, bars, a 5×7 bitmap font) and a PNG writer (stored deflate blocks, CRC-32, Adler-32)
//! — a few hundred lines instead of a font stack and an image codec in the build.
//!
//! Draws, from whatever `results.json` holds: latency vs fleet size (fleet), throughput vs
//! claimers with graphile-worker as reference (queue), agentpool vs graphile-worker (queue).

use serde_json::Value;

use crate::results;

type Rgb = [u8; 3];
const BLACK: Rgb = [30, 30, 30];
const GREY: Rgb = [215, 215, 215];
const BLUE: Rgb = [31, 119, 180];
const ORANGE: Rgb = [255, 127, 14];
const GREEN: Rgb = [44, 160, 44];
/// The raw-SQL ceilings beside the two queues.
const GRAY: Rgb = [127, 127, 127];

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A line `thick` pixels wide (Bresenham with a square pen); dashed when `dash` > 0.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, thick: i64, dash: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut step) = (x0, y0, dx + dy, 0i64);
        loop {
            if dash == 0 || (step / dash) % 2 == 0 {
                self.rect(
                    x - thick / 2,
                    y - thick / 2,
                    x + (thick - 1) / 2,
                    y + (thick - 1) / 2,
                    c,
                );
            }
            step += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text at (x, y) top-left, `scale` pixels per font pixel.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, scale: i64) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let px = x + (i as i64 * 6 + col) * scale;
                        let py = y + row as i64 * scale;
                        self.rect(px, py, px + scale - 1, py + scale - 1, c);
                    }
                }
            }
        }
    }

    fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 6 * scale
    }

    fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity((self.w * 3 + 1) * self.h);
        for row in self.px.chunks(self.w * 3) {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(self.w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &zlib_stored(&raw));
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A zlib stream of stored (uncompressed) deflate blocks: larger files, no codec.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(b);
    }
    let (mut a, mut s) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        s = (s + a) % 65_521;
    }
    out.extend_from_slice(&((s << 16) | a).to_be_bytes());
    out
}

/// 5×7 glyphs, one row per byte (low 5 bits); lower case is drawn as upper case.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
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
        'X' | '×' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '>' | '→' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        _ => [0; 7],
    }
}

/// A round axis maximum above `v` and its tick step.
fn nice(v: f64) -> (f64, f64) {
    let v = if v > 0.0 { v * 1.1 } else { 1.0 };
    let mag = 10f64.powf(v.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag / 2.0)
        .find(|s| v / s <= 6.0)
        .unwrap_or(mag * 2.0);
    ((v / step).ceil() * step, step)
}

fn fmt(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

const W: usize = 900;
const H: usize = 560;
/// Margins: left, right, top, bottom.
const L: i64 = 90;
const R: i64 = 40;
const T: i64 = 60;
const B: i64 = 80;

/// Axes, title and y ticks; returns the y-axis maximum.
fn frame(c: &mut Canvas, title: &str, xlabel: &str, ylabel: &str, ymax: f64) -> f64 {
    let (top, step) = nice(ymax);
    c.text(L, 20, title, BLACK, 2);
    let (w, h) = (W as i64, H as i64);
    let mut v = 0.0;
    while v <= top + 1e-9 {
        let y = h - B - ((v / top) * (h - T - B) as f64) as i64;
        c.line((L, y), (w - R, y), GREY, 1, 0);
        let s = fmt(v);
        c.text(L - 8 - Canvas::text_width(&s, 2), y - 7, &s, BLACK, 2);
        v += step;
    }
    c.line((L, T), (L, h - B), BLACK, 2, 0);
    c.line((L, h - B), (w - R, h - B), BLACK, 2, 0);
    c.text(L, h - 30, xlabel, BLACK, 2);
    c.text(8, T - 24, ylabel, BLACK, 2);
    top
}

struct Series<'a> {
    name: &'a str,
    color: Rgb,
    values: Vec<f64>,
    dash: i64,
}

/// Lines over categorical x values (evenly spaced), a legend at the top right.
fn line_chart(file: &str, title: &str, xlabel: &str, ylabel: &str, xs: &[String], series: &[Series]) {
    let mut c = Canvas::new(W, H);
    let ymax = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let top = frame(&mut c, title, xlabel, ylabel, ymax);
    let (w, h) = (W as i64, H as i64);
    let n = xs.len().max(1) as i64;
    let x_at = |i: usize| L + 40 + (i as i64) * (w - L - R - 80) / (n - 1).max(1);
    let y_at = |v: f64| h - B - ((v / top) * (h - T - B) as f64) as i64;
    for (i, x) in xs.iter().enumerate() {
        let px = x_at(i);
        c.line((px, h - B), (px, h - B + 6), BLACK, 2, 0);
        c.text(px - Canvas::text_width(x, 2) / 2, h - B + 12, x, BLACK, 2);
    }
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<(i64, i64)> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| (x_at(i), y_at(*v)))
            .collect();
        for p in pts.windows(2) {
            c.line(p[0], p[1], s.color, 3, s.dash);
        }
        for p in &pts {
            c.rect(p.0 - 4, p.1 - 4, p.0 + 4, p.1 + 4, s.color);
        }
        let ly = T + 8 + k as i64 * 22;
        c.line((w - R - 250, ly + 6), (w - R - 210, ly + 6), s.color, 3, s.dash);
        c.text(w - R - 200, ly, s.name, BLACK, 2);
    }
    save(file, &c);
}

fn bar_chart(file: &str, title: &str, ylabel: &str, bars: &[(String, f64, Rgb)]) {
    let mut c = Canvas::new(W, H);
    let ymax = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let top = frame(&mut c, title, "", ylabel, ymax);
    let (w, h) = (W as i64, H as i64);
    let slot = (w - L - R) / bars.len().max(1) as i64;
    for (i, (name, v, color)) in bars.iter().enumerate() {
        let x0 = L + i as i64 * slot + slot / 4;
        let x1 = x0 + slot / 2;
        let y = h - B - ((v / top) * (h - T - B) as f64) as i64;
        c.rect(x0, y, x1, h - B - 1, *color);
        let label = fmt(*v);
        c.text(
            (x0 + x1) / 2 - Canvas::text_width(&label, 2) / 2,
            y - 20,
            &label,
            BLACK,
            2,
        );
        c.text(
            (x0 + x1) / 2 - Canvas::text_width(name, 2) / 2,
            h - B + 12,
            name,
            BLACK,
            2,
        );
    }
    save(file, &c);
}

fn save(file: &str, c: &Canvas) {
    let path = results::dir().join(file);
    std::fs::write(&path, c.png()).expect("write png");
    println!("plot: {}", path.display());
}

fn nums(v: &Value, key: &str) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(|r| r[key].as_f64().unwrap_or(0.0)).collect())
        .unwrap_or_default()
}

pub fn run() {
    let all = results::load();
    if all.is_empty() {
        eprintln!("[scale] no results yet: run queue, fleet or events first");
    }
    if let Some(f) = all.get("fleet") {
        let rows = &f["rows"];
        let xs: Vec<String> = nums(rows, "workers").iter().map(|v| fmt(*v)).collect();
        line_chart(
            "latency_vs_fleet.png",
            "Submit to claim latency vs idle fleet size",
            "long-polling workers",
            "ms",
            &xs,
            &[
                Series {
                    name: "p50",
                    color: BLUE,
                    values: nums(rows, "p50_ms"),
                    dash: 0,
                },
                Series {
                    name: "p99",
                    color: ORANGE,
                    values: nums(rows, "p99_ms"),
                    dash: 0,
                },
            ],
        );
        line_chart(
            "cpu_vs_fleet.png",
            "CPU seconds per 100 tasks vs fleet size",
            "long-polling workers",
            "CPU s",
            &xs,
            &[
                Series {
                    name: "server",
                    color: BLUE,
                    values: nums(rows, "server_cpu_per_100"),
                    dash: 0,
                },
                Series {
                    name: "PostgreSQL",
                    color: GREEN,
                    values: nums(rows, "pg_cpu_per_100"),
                    dash: 0,
                },
            ],
        );
    }
    if let Some(q) = all.get("queue") {
        let by = &q["by_claimers"];
        let xs: Vec<String> = nums(by, "claimers").iter().map(|v| fmt(*v)).collect();
        let gw = q["graphile_median"].as_f64().unwrap_or(0.0);
        line_chart(
            "throughput_vs_claimers.png",
            "Claim+complete throughput vs claimers (PostgreSQL)",
            "claimers (batches of 100)",
            "tasks/s",
            &xs,
            &[
                Series {
                    name: "agentpool",
                    color: BLUE,
                    values: nums(by, "per_sec"),
                    dash: 0,
                },
                Series {
                    name: "graphile-worker",
                    color: ORANGE,
                    values: vec![gw; xs.len()],
                    dash: 8,
                },
            ],
        );
        bar_chart(
            "agentpool_vs_graphile.png",
            &format!(
                "Claim+complete, median of {} rounds: ratio {:.2}x",
                q["agentpool_rounds"].as_array().map_or(0, Vec::len),
                q["ratio"].as_f64().unwrap_or(0.0)
            ),
            "tasks/s",
            &[
                (
                    "agentpool".into(),
                    q["agentpool_median"].as_f64().unwrap_or(0.0),
                    BLUE,
                ),
                ("graphile-worker".into(), gw, ORANGE),
            ]
            .into_iter()
            .chain(q["raw"].as_array().into_iter().flatten().map(|r| {
                (
                    r["short"].as_str().unwrap_or("raw SQL").to_string(),
                    r["median"].as_f64().unwrap_or(0.0),
                    GRAY,
                )
            }))
            .collect::<Vec<_>>(),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc_and_adler_match_known_values() {
        assert_eq!(super::crc32(b"IEND"), 0xae42_6082);
        let z = super::zlib_stored(b"abc");
        assert_eq!(&z[z.len() - 4..], &0x024d_0127u32.to_be_bytes());
    }
}
