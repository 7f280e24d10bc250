//! The invitation as a QR code: drawn on the terminal with Unicode half
//! blocks for a dark or a light background, and written as a PNG for
//! printing. Both keep the quiet zone of four light modules the QR
//! specification asks for, without which scanners fail.

use crate::files::Error;
use qrcode::{Color, QrCode};

/// Light modules around the code (the QR specification's quiet zone).
pub const QUIET_ZONE: usize = 4;
/// Pixels per module in the PNG.
pub const PNG_SCALE: usize = 8;

/// The terminal the code is drawn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Terminal {
    /// Guess from `COLORFGBG` (set by some terminals): light if its
    /// background is white or light grey, otherwise dark.
    Auto,
    /// Light text on a dark background (the default of most terminals).
    Dark,
    /// Dark text on a light background.
    Light,
    /// Do not draw the code (the PNG is still written).
    None,
}

impl Terminal {
    /// `Auto` decided: `Dark`, `Light` or `None`.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto => match std::env::var("COLORFGBG") {
                Ok(value) if is_light_background(&value) => Self::Light,
                _ => Self::Dark,
            },
            other => other,
        }
    }
}

/// `COLORFGBG` is `FG;BG` (sometimes `FG;X;BG`); backgrounds 7 and 15 are
/// light grey and white.
fn is_light_background(colorfgbg: &str) -> bool {
    matches!(colorfgbg.rsplit(';').next(), Some("7" | "15"))
}

/// `text` as a QR code of half blocks (two rows of modules per line), for
/// `terminal` (`Auto` is resolved first). A block is drawn in the
/// terminal's text colour, a space shows its background; the QR code's
/// dark modules must come out dark, so they are spaces on a dark terminal
/// and blocks on a light one. `None` gives an empty string.
pub fn terminal_code(text: &str, terminal: Terminal) -> Result<String, Error> {
    use qrcode::render::unicode::Dense1x2;
    let code = QrCode::new(text.as_bytes())?;
    let renderer = |dark, light| {
        code.render::<Dense1x2>()
            .dark_color(dark)
            .light_color(light)
            .quiet_zone(true)
            .build()
    };
    Ok(match terminal.resolve() {
        Terminal::Light => renderer(Dense1x2::Dark, Dense1x2::Light),
        Terminal::None => String::new(),
        Terminal::Dark | Terminal::Auto => renderer(Dense1x2::Light, Dense1x2::Dark),
    })
}

/// `text` as a PNG: black modules on white, [`QUIET_ZONE`] modules of
/// white around, [`PNG_SCALE`] pixels per module, 8-bit greyscale.
pub fn png(text: &str) -> Result<Vec<u8>, Error> {
    let code = QrCode::new(text.as_bytes())?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![0xFFu8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (row, column) = (index / modules, index % modules);
        for y in 0..PNG_SCALE {
            let start =
                ((row + QUIET_ZONE) * PNG_SCALE + y) * side + (column + QUIET_ZONE) * PNG_SCALE;
            if let Some(run) = pixels.get_mut(start..start + PNG_SCALE) {
                run.fill(0);
            }
        }
    }
    let side = u32::try_from(side).map_err(|_| "the QR code is too large for a PNG")?;
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "confidant2:ABZodHRwOi8vMTI3LjAuMC4xOjUwMDUxABZBQUVDQXdRRkJnY0lDUW9MREEwT0R3AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-eiuhR";

    /// What a camera sees of a code drawn on a terminal: each character
    /// cell is two pixels high (upper and lower half), a block in the text
    /// colour, a space in the background; the terminal's margin around is
    /// background too.
    fn as_seen_on(drawn: &str, background: u8, text_colour: u8) -> (usize, usize, Vec<u8>) {
        let lines: Vec<Vec<char>> = drawn.lines().map(|line| line.chars().collect()).collect();
        let margin = 6;
        let width = lines.iter().map(Vec::len).max().unwrap() + 2 * margin;
        let height = 2 * lines.len() + 2 * margin;
        let mut pixels = vec![background; width * height];
        for (row, line) in lines.iter().enumerate() {
            for (column, c) in line.iter().enumerate() {
                let (upper, lower) = match c {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    _ => (false, false),
                };
                for (half, painted) in [(0, upper), (1, lower)] {
                    if painted {
                        pixels[(margin + 2 * row + half) * width + margin + column] = text_colour;
                    }
                }
            }
        }
        (width, height, scale(width, height, &pixels, 4))
    }

    fn scale(width: usize, height: usize, pixels: &[u8], by: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(width * height * by * by);
        for y in 0..height * by {
            for x in 0..width * by {
                out.push(pixels[(y / by) * width + x / by]);
            }
        }
        out
    }

    fn decode(width: usize, height: usize, pixels: &[u8]) -> Vec<String> {
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
            pixels[y * width + x]
        });
        image
            .detect_grids()
            .into_iter()
            .filter_map(|grid| grid.decode().ok().map(|(_, text)| text))
            .collect()
    }

    #[test]
    fn the_code_drawn_for_each_terminal_scans_on_it() {
        for (terminal, background, text_colour) in
            [(Terminal::Dark, 0x10, 0xE0), (Terminal::Light, 0xF0, 0x20)]
        {
            let drawn = terminal_code(TEXT, terminal).unwrap();
            assert!(drawn.chars().all(|c| c == '\n' || !c.is_control()));
            let (width, height, pixels) = as_seen_on(&drawn, background, text_colour);
            assert_eq!(
                decode(width * 4, height * 4, &pixels),
                [TEXT],
                "{terminal:?}"
            );
        }
        assert_eq!(terminal_code(TEXT, Terminal::None).unwrap(), "");
    }

    #[test]
    fn the_png_scans_and_has_a_quiet_zone() {
        let bytes = png(TEXT).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let (width, height) = (info.width as usize, info.height as usize);
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        pixels.truncate(width * height);
        // The outer four modules are white all round.
        let border = QUIET_ZONE * PNG_SCALE;
        for y in 0..height {
            for x in 0..width {
                if x < border || y < border || x >= width - border || y >= height - border {
                    assert_eq!(pixels[y * width + x], 0xFF, "({x}, {y})");
                }
            }
        }
        assert_eq!(decode(width, height, &pixels), [TEXT]);
    }

    #[test]
    fn a_light_background_is_recognised_in_colorfgbg() {
        assert!(is_light_background("0;15"));
        assert!(is_light_background("0;default;7"));
        assert!(!is_light_background("15;0"));
        assert!(!is_light_background(""));
    }
}
