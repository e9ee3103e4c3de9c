//! Upload validation and thumbnails.
//!
//! An upload is trusted for nothing: the format comes from the bytes (not
//! the Content-Type), the dimensions from the header are checked against a
//! pixel limit *before* any pixel is decoded (a 100k×100k PNG is a few
//! hundred bytes and 40 GB decoded), and decoding itself runs with memory
//! limits. The original is kept as uploaded; the thumbnail is re-encoded, so
//! what most clients download has been through our decoder.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, ImageReader, Limits};

/// Limits applied to every upload.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Largest accepted width × height.
    pub max_pixels: u64,
    /// Thumbnails are at most this wide (and as tall as the aspect ratio says,
    /// capped at the same number).
    pub thumbnail_width: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_pixels: 40_000_000,
            thumbnail_width: 640,
        }
    }
}

/// A validated image with its thumbnail.
#[derive(Debug)]
pub struct ProcessedImage {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    /// A JPEG thumbnail.
    pub thumbnail: Vec<u8>,
}

impl ProcessedImage {
    /// The file extension for the original.
    pub fn extension(&self) -> &'static str {
        extension(self.format)
    }
}

pub fn extension(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        _ => "bin",
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("not an image: accepted formats are JPEG, PNG, WebP and GIF")]
    Unsupported,
    #[error("image is {width}×{height} pixels; the limit is {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("image could not be decoded: {0}")]
    Malformed(String),
}

const ACCEPTED: [ImageFormat; 4] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
];

/// Validates `bytes` and makes a thumbnail. CPU-heavy: call it from
/// `spawn_blocking`.
pub fn process(bytes: &[u8], limits: ImageLimits) -> Result<ProcessedImage, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Malformed(e.to_string()))?;
    let format = reader
        .format()
        .filter(|f| ACCEPTED.contains(f))
        .ok_or(ImageError::Unsupported)?;

    // Header only: nothing is decoded yet.
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ImageError::Malformed(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(ImageError::Malformed("zero-sized image".into()));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(width);
    decode_limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel is the largest any accepted format decodes to.
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(decode_limits);
    let decoded = reader
        .decode()
        .map_err(|e| ImageError::Malformed(e.to_string()))?;

    let max_side = limits.thumbnail_width.max(1);
    let thumb = if width > max_side || height > max_side {
        decoded.thumbnail(max_side, max_side)
    } else {
        decoded
    };
    let mut thumbnail = Vec::new();
    JpegEncoder::new_with_quality(&mut thumbnail, 82)
        .encode_image(&thumb.to_rgb8())
        .map_err(|e| ImageError::Malformed(e.to_string()))?;

    Ok(ProcessedImage {
        format,
        width,
        height,
        thumbnail,
    })
}

/// Images for tests and tools.
pub mod fixtures {
    /// A valid 8×8 PNG, for load tools that need to create posts.
    pub fn tiny_png() -> Vec<u8> {
        let img = image::RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([(x * 32) as u8, (y * 32) as u8, 128])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        let _ = image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png);
        out.into_inner()
    }

    /// A valid-looking PNG of a few dozen bytes whose header claims
    /// `width`×`height` pixels: a decompression bomb's calling card.
    pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &ihdr);
        // An empty zlib stream: the pixels never come.
        chunk(
            &mut png,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut png, b"IEND", &[]);
        png
    }

    fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgb};

    fn encode(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
        let img = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn accepts_each_format_and_thumbnails() {
        for format in [
            ImageFormat::Png,
            ImageFormat::Jpeg,
            ImageFormat::Gif,
            ImageFormat::WebP,
        ] {
            let img = process(&encode(format, 1280, 720), ImageLimits::default()).unwrap();
            assert_eq!((img.width, img.height), (1280, 720), "{format:?}");
            assert_eq!(img.format, format);
            let thumb = image::load_from_memory(&img.thumbnail).unwrap();
            assert_eq!((thumb.width(), thumb.height()), (640, 360), "{format:?}");
        }
    }

    #[test]
    fn small_images_keep_their_size() {
        let img = process(&encode(ImageFormat::Png, 1, 1), ImageLimits::default()).unwrap();
        assert_eq!((img.width, img.height), (1, 1));
    }

    #[test]
    fn rejects_non_images_and_truncated_files() {
        assert_eq!(
            process(b"hello, world", ImageLimits::default()).unwrap_err(),
            ImageError::Unsupported
        );
        let png = encode(ImageFormat::Png, 64, 64);
        assert!(matches!(
            process(&png[..png.len() / 2], ImageLimits::default()),
            Err(ImageError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_pixel_bombs_from_the_header() {
        let bomb = fixtures::png_claiming(100_000, 100_000);
        assert!(bomb.len() < 100);
        assert_eq!(
            process(&bomb, ImageLimits::default()).unwrap_err(),
            ImageError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                limit: 40_000_000
            }
        );
    }
}
