//! Frame inputs (spec 003 §4.2 `input.type: frame`): decode a JPEG or PNG (or
//! raw RGB/BGR), enforce the declared size and channel limits, then turn it
//! into the model's input tensor as `model.yaml` declares: resize, color
//! order, layout, inversion, scale, mean and std.
//!
//! Decoding runs with `image`'s allocation limits set from the declared
//! maximum size, so a decompression bomb fails as invalid input instead of
//! exhausting the worker's memory.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat as Codec, ImageReader, Limits, imageops::FilterType};
use ward_config::{ColorOrder, FrameSpec, Layout};
use ward_protocol::{Frame, ImageFormat, Tensor};

/// A frame that cannot become the model's input; the client gets it as an
/// `InvalidInput` error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("cannot decode the {codec} frame")]
    Decode {
        codec: &'static str,
        #[source]
        source: image::ImageError,
    },
    #[error("raw {width}x{height} RGB frame needs {expected} bytes, got {actual}")]
    RawLength {
        width: u32,
        height: u32,
        expected: u64,
        actual: usize,
    },
    #[error("raw frame does not fit its size")]
    RawSize,
    #[error("frame is {width}x{height}, below the minimum {min_width}x{min_height}")]
    TooSmall {
        width: u32,
        height: u32,
        min_width: u32,
        min_height: u32,
    },
    #[error("frame is {width}x{height}, above the maximum {max_width}x{max_height}")]
    TooLarge {
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },
}

/// A decoded frame: 8-bit pixels, row-major, `channels` interleaved (RGB or gray).
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: Vec<u8>,
}

/// Decodes `frame` and checks it against the declared limits.
pub fn decode(frame: &Frame, spec: &FrameSpec) -> Result<Pixels, FrameError> {
    let image = match frame.format {
        ImageFormat::Jpeg | ImageFormat::Png => {
            let codec = if frame.format == ImageFormat::Jpeg {
                Codec::Jpeg
            } else {
                Codec::Png
            };
            let mut reader = ImageReader::with_format(Cursor::new(&frame.data), codec);
            let mut limits = Limits::default();
            limits.max_image_width = Some(spec.max_width);
            limits.max_image_height = Some(spec.max_height);
            // Room for the decoded image in 16-bit RGBA, and no more.
            limits.max_alloc =
                Some(u64::from(spec.max_width) * u64::from(spec.max_height) * 8 + (1 << 20));
            reader.limits(limits);
            let name = if codec == Codec::Jpeg { "JPEG" } else { "PNG" };
            reader.decode().map_err(|source| FrameError::Decode {
                codec: name,
                source,
            })?
        }
        ImageFormat::RawRgb { width, height } | ImageFormat::RawBgr { width, height } => {
            check_size(width, height, spec)?;
            let expected = u64::from(width) * u64::from(height) * 3;
            if frame.data.len() as u64 != expected {
                return Err(FrameError::RawLength {
                    width,
                    height,
                    expected,
                    actual: frame.data.len(),
                });
            }
            let mut data = frame.data.clone();
            if matches!(frame.format, ImageFormat::RawBgr { .. }) {
                data.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
            }
            let rgb = image::RgbImage::from_raw(width, height, data).ok_or(FrameError::RawSize)?;
            DynamicImage::ImageRgb8(rgb)
        }
    };
    check_size(image.width(), image.height(), spec)?;
    let pixels = if spec.channels == 1 {
        let gray = image.into_luma8();
        Pixels {
            width: gray.width(),
            height: gray.height(),
            channels: 1,
            data: gray.into_raw(),
        }
    } else {
        let rgb = image.into_rgb8();
        Pixels {
            width: rgb.width(),
            height: rgb.height(),
            channels: 3,
            data: rgb.into_raw(),
        }
    };
    Ok(pixels)
}

fn check_size(width: u32, height: u32, spec: &FrameSpec) -> Result<(), FrameError> {
    if width < spec.min_width || height < spec.min_height {
        return Err(FrameError::TooSmall {
            width,
            height,
            min_width: spec.min_width,
            min_height: spec.min_height,
        });
    }
    if width > spec.max_width || height > spec.max_height {
        return Err(FrameError::TooLarge {
            width,
            height,
            max_width: spec.max_width,
            max_height: spec.max_height,
        });
    }
    Ok(())
}

/// Turns decoded pixels into the FP32 input tensor `name` of rank `rank`
/// (4: `[1, C, H, W]` or `[1, H, W, C]`; 2: `[1, C*H*W]` flattened in the layout's order).
pub fn to_tensor(pixels: Pixels, spec: &FrameSpec, name: &str, rank: usize) -> Tensor {
    let pre = &spec.preprocessing;
    let pixels = match pre.resize {
        Some((w, h)) if (w, h) != (pixels.width, pixels.height) => resize(pixels, w, h),
        _ => pixels,
    };
    let (w, h, c) = (
        pixels.width as usize,
        pixels.height as usize,
        pixels.channels as usize,
    );
    let mut values = vec![0f32; w * h * c];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                // Stored order is RGB (or gray); BGR models read channel 2 first.
                let src_ch = if pre.color == ColorOrder::Bgr {
                    c - 1 - ch
                } else {
                    ch
                };
                let mut v = f32::from(pixels.data[(y * w + x) * c + src_ch]);
                if pre.invert {
                    v = 255.0 - v;
                }
                let v = (v * pre.scale - pre.mean[ch]) / pre.std[ch];
                let at = match pre.layout {
                    Layout::Nchw => (ch * h + y) * w + x,
                    Layout::Nhwc => (y * w + x) * c + ch,
                };
                values[at] = v;
            }
        }
    }
    let shape: Vec<u64> = match (rank, pre.layout) {
        (4, Layout::Nchw) => vec![1, c as u64, h as u64, w as u64],
        (4, Layout::Nhwc) => vec![1, h as u64, w as u64, c as u64],
        _ => vec![1, (w * h * c) as u64],
    };
    Tensor::from_f32(name, shape, &values)
}

fn resize(p: Pixels, width: u32, height: u32) -> Pixels {
    if width <= p.width && height <= p.height {
        return area_downscale(&p, width, height);
    }
    let filter = FilterType::Triangle;
    let data = if p.channels == 1 {
        let img =
            image::GrayImage::from_raw(p.width, p.height, p.data).expect("decoded sizes agree");
        image::imageops::resize(&img, width, height, filter).into_raw()
    } else {
        let img =
            image::RgbImage::from_raw(p.width, p.height, p.data).expect("decoded sizes agree");
        image::imageops::resize(&img, width, height, filter).into_raw()
    };
    Pixels {
        width,
        height,
        channels: p.channels,
        data,
    }
}

/// For each output cell along one axis, the source cells it covers and by how much.
fn coverage(src: u32, dst: u32) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f32 / dst as f32;
    (0..dst)
        .map(|i| {
            let (lo, hi) = (i as f32 * scale, (i + 1) as f32 * scale);
            let mut cells = Vec::new();
            let mut j = lo.floor() as usize;
            while (j as f32) < hi && j < src as usize {
                let w = (hi.min(j as f32 + 1.0) - lo.max(j as f32)).max(0.0);
                if w > 0.0 {
                    cells.push((j, w / scale));
                }
                j += 1;
            }
            cells
        })
        .collect()
}

/// Downscaling by area averaging: every output pixel is the mean of the source
/// area it covers (fractional cells weighted), which is how sensor-like
/// downsampled data sets (e.g. the 8x8 digits) were made. Bilinear filtering
/// would smear edges across cells instead.
fn area_downscale(p: &Pixels, width: u32, height: u32) -> Pixels {
    let c = p.channels as usize;
    let (xs, ys) = (coverage(p.width, width), coverage(p.height, height));
    let mut data = Vec::with_capacity(width as usize * height as usize * c);
    for ycells in &ys {
        for xcells in &xs {
            for ch in 0..c {
                let mut acc = 0f32;
                for &(y, wy) in ycells {
                    for &(x, wx) in xcells {
                        acc += wy * wx * f32::from(p.data[(y * p.width as usize + x) * c + ch]);
                    }
                }
                data.push(acc.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Pixels {
        width,
        height,
        channels: p.channels,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_config::Preprocessing;

    fn spec(channels: u32, layout: Layout) -> FrameSpec {
        FrameSpec {
            format: None,
            min_width: 2,
            min_height: 2,
            max_width: 64,
            max_height: 64,
            channels,
            preprocessing: Preprocessing {
                resize: None,
                color: if channels == 1 {
                    ColorOrder::Gray
                } else {
                    ColorOrder::Rgb
                },
                layout,
                invert: false,
                scale: 1.0,
                mean: vec![0.0; channels as usize],
                std: vec![1.0; channels as usize],
            },
        }
    }

    fn raw(width: u32, height: u32, data: Vec<u8>) -> Frame {
        Frame {
            format: ImageFormat::RawRgb { width, height },
            data,
            frame_id: None,
            camera_id: None,
        }
    }

    #[test]
    fn layouts_place_channels_where_declared() {
        // 2x2 RGB: pixel i has channels (10i, 10i+1, 10i+2).
        let data: Vec<u8> = (0..4)
            .flat_map(|i| [10 * i, 10 * i + 1, 10 * i + 2])
            .collect();
        let s = spec(3, Layout::Nchw);
        let t = to_tensor(decode(&raw(2, 2, data.clone()), &s).unwrap(), &s, "x", 4);
        assert_eq!(t.shape, vec![1, 3, 2, 2]);
        assert_eq!(
            t.to_f32().unwrap(),
            vec![0., 10., 20., 30., 1., 11., 21., 31., 2., 12., 22., 32.]
        );
        let s = spec(3, Layout::Nhwc);
        let t = to_tensor(decode(&raw(2, 2, data), &s).unwrap(), &s, "x", 4);
        assert_eq!(t.shape, vec![1, 2, 2, 3]);
        assert_eq!(t.to_f32().unwrap()[..6], [0., 1., 2., 10., 11., 12.]);
    }

    #[test]
    fn bgr_scale_mean_std_and_invert_apply_in_order() {
        let mut s = spec(3, Layout::Nhwc);
        s.preprocessing.color = ColorOrder::Bgr;
        s.preprocessing.invert = true;
        s.preprocessing.scale = 0.5;
        s.preprocessing.mean = vec![1.0, 2.0, 3.0];
        s.preprocessing.std = vec![2.0, 2.0, 2.0];
        let data = [0u8, 100, 255].repeat(4);
        let t = to_tensor(decode(&raw(2, 2, data), &s).unwrap(), &s, "x", 2);
        // Channel 0 reads blue (255) → inverted 0 → (0*0.5-1)/2 = -0.5.
        assert_eq!(
            t.to_f32().unwrap()[..3],
            [-0.5, (155.0 * 0.5 - 2.0) / 2.0, (255.0 * 0.5 - 3.0) / 2.0]
        );
        assert_eq!(t.shape, vec![1, 12]);
    }

    #[test]
    fn size_limits_and_corrupt_images_are_named() {
        let s = spec(3, Layout::Nchw);
        let e = decode(&raw(1, 1, vec![0; 3]), &s).unwrap_err();
        assert_eq!(e.to_string(), "frame is 1x1, below the minimum 2x2");
        let e = decode(&raw(65, 2, vec![0; 65 * 2 * 3]), &s).unwrap_err();
        assert!(e.to_string().contains("above the maximum 64x64"), "{e}");
        let e = decode(&raw(2, 2, vec![0; 5]), &s).unwrap_err();
        assert!(e.to_string().contains("needs 12 bytes, got 5"), "{e}");
        let jpeg = Frame {
            format: ImageFormat::Jpeg,
            data: b"\xff\xd8\xff garbage".to_vec(),
            frame_id: None,
            camera_id: None,
        };
        assert!(
            crate::error_chain::error_chain(&decode(&jpeg, &s).unwrap_err())
                .starts_with("cannot decode the JPEG frame: ")
        );
    }

    #[test]
    fn png_round_trip_with_resize_to_gray() {
        let img =
            image::GrayImage::from_fn(16, 16, |x, _| image::Luma([if x < 8 { 0 } else { 255 }]));
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), Codec::Png)
            .unwrap();
        let mut s = spec(1, Layout::Nchw);
        s.preprocessing.resize = Some((2, 2));
        let frame = Frame {
            format: ImageFormat::Png,
            data: png,
            frame_id: None,
            camera_id: None,
        };
        let t = to_tensor(decode(&frame, &s).unwrap(), &s, "x", 4);
        assert_eq!(t.shape, vec![1, 1, 2, 2]);
        assert_eq!(
            t.to_f32().unwrap(),
            vec![0.0, 255.0, 0.0, 255.0],
            "area averaging keeps the halves apart"
        );
    }

    #[test]
    fn area_downscale_averages_fractional_cells() {
        // 3 pixels → 2: each output covers 1.5 source pixels.
        let p = Pixels {
            width: 3,
            height: 1,
            channels: 1,
            data: vec![0, 90, 180],
        };
        let out = area_downscale(&p, 2, 1);
        assert_eq!(out.data, vec![30, 150]);
    }

    #[test]
    fn decompression_bombs_hit_the_allocation_limit() {
        // A valid 4096x4096 PNG (tiny when compressed) against a 64x64 limit.
        let img = image::GrayImage::new(4096, 4096);
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), Codec::Png)
            .unwrap();
        assert!(png.len() < 100_000);
        let frame = Frame {
            format: ImageFormat::Png,
            data: png,
            frame_id: None,
            camera_id: None,
        };
        assert!(decode(&frame, &spec(1, Layout::Nchw)).is_err());
    }
}
