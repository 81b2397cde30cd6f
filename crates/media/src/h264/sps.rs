//! Sequence and picture parameter sets (H.264 §7.3.2.1, §7.3.2.2): the fields a
//! packager needs (profile, level, picture size, codec string).

use super::annexb::remove_emulation_prevention;
use super::bits::BitReader;
use super::{nal_type, H264Error, NAL_PPS, NAL_SPS};

/// Profiles whose SPS carries chroma format, bit depth and scaling matrices.
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// Frame cropping offsets from the SPS, in crop units (not pixels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCropping {
    /// `frame_crop_left_offset`.
    pub left: u32,
    /// `frame_crop_right_offset`.
    pub right: u32,
    /// `frame_crop_top_offset`.
    pub top: u32,
    /// `frame_crop_bottom_offset`.
    pub bottom: u32,
}

/// The parsed fields of a sequence parameter set.
///
/// ```
/// use skylark_media::h264::Sps;
///
/// // x264, Baseline, 1280x720, level 3.1.
/// let sps = Sps::parse(&[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35])?;
/// assert_eq!((sps.width, sps.height), (1280, 720));
/// assert_eq!(sps.profile_idc, 66);
/// assert_eq!(sps.level_idc, 31);
/// assert_eq!(sps.codec_string(), "avc1.42c01f");
/// # Ok::<(), skylark_media::h264::H264Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    /// `profile_idc`: 66 Baseline, 77 Main, 100 High, ...
    pub profile_idc: u8,
    /// The byte of `constraint_set0..5_flag` and reserved bits, as in the codec string.
    pub constraint_flags: u8,
    /// `level_idc`: level × 10 (31 = level 3.1).
    pub level_idc: u8,
    /// `seq_parameter_set_id`, 0–31.
    pub id: u32,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 (1 unless a High profile says otherwise).
    pub chroma_format_idc: u32,
    /// `separate_colour_plane_flag` (4:4:4 only).
    pub separate_colour_plane: bool,
    /// Luma bit depth, 8–14.
    pub bit_depth_luma: u8,
    /// Chroma bit depth, 8–14.
    pub bit_depth_chroma: u8,
    /// `log2_max_frame_num_minus4 + 4`.
    pub log2_max_frame_num: u8,
    /// `pic_order_cnt_type`, 0–2.
    pub pic_order_cnt_type: u8,
    /// `max_num_ref_frames`.
    pub max_num_ref_frames: u32,
    /// Width in macroblocks.
    pub pic_width_in_mbs: u32,
    /// Height in map units (macroblocks for progressive, macroblock pairs otherwise).
    pub pic_height_in_map_units: u32,
    /// `frame_mbs_only_flag`: false for streams that may be interlaced.
    pub frame_mbs_only: bool,
    /// Cropping, if `frame_cropping_flag` is set.
    pub frame_cropping: Option<FrameCropping>,
    /// `vui_parameters_present_flag` (the VUI itself is not parsed).
    pub vui_present: bool,
    /// Displayed width in pixels, after cropping.
    pub width: u32,
    /// Displayed height in pixels, after cropping.
    pub height: u32,
}

impl Sps {
    /// Parses an SPS NAL unit, header byte included, emulation prevention intact.
    pub fn parse(nal: &[u8]) -> Result<Self, H264Error> {
        let ty = nal_type(nal).ok_or(H264Error::Empty)?;
        if ty != NAL_SPS {
            return Err(H264Error::UnexpectedNalType {
                expected: NAL_SPS,
                found: ty,
            });
        }
        let rbsp = remove_emulation_prevention(&nal[1..]);
        let mut r = BitReader::new(&rbsp);

        let profile_idc = r.u8()?;
        let constraint_flags = r.u8()?;
        let level_idc = r.u8()?;
        let id = r.ue_max("seq_parameter_set_id", 31)?;

        let mut chroma_format_idc = 1;
        let mut separate_colour_plane = false;
        let mut bit_depth_luma = 8;
        let mut bit_depth_chroma = 8;
        if HIGH_PROFILES.contains(&profile_idc) {
            chroma_format_idc = r.ue_max("chroma_format_idc", 3)?;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.bit()?;
            }
            // Limits from §7.4.2.1.1 (0..=6) keep the sums below in u8.
            bit_depth_luma = 8 + r.ue_max("bit_depth_luma_minus8", 6)? as u8;
            bit_depth_chroma = 8 + r.ue_max("bit_depth_chroma_minus8", 6)? as u8;
            let _qpprime_y_zero_transform_bypass = r.bit()?;
            if r.bit()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }

        let log2_max_frame_num = 4 + r.ue_max("log2_max_frame_num_minus4", 12)? as u8;
        let pic_order_cnt_type = r.ue_max("pic_order_cnt_type", 2)? as u8;
        match pic_order_cnt_type {
            0 => {
                r.ue_max("log2_max_pic_order_cnt_lsb_minus4", 12)?;
            }
            1 => {
                let _delta_pic_order_always_zero = r.bit()?;
                let _offset_for_non_ref_pic = r.se()?;
                let _offset_for_top_to_bottom_field = r.se()?;
                let cycle = r.ue_max("num_ref_frames_in_pic_order_cnt_cycle", 255)?;
                for _ in 0..cycle {
                    let _offset_for_ref_frame = r.se()?;
                }
            }
            _ => {}
        }
        let max_num_ref_frames = r.ue()?;
        let _gaps_in_frame_num_value_allowed = r.bit()?;
        // Bounds keep every size computation below far from overflow while
        // allowing more than any level permits (level 6.2: 139 264 MBs a frame).
        let pic_width_in_mbs = r.ue_max("pic_width_in_mbs_minus1", 0xffff)? + 1;
        let pic_height_in_map_units = r.ue_max("pic_height_in_map_units_minus1", 0xffff)? + 1;
        let frame_mbs_only = r.bit()?;
        if !frame_mbs_only {
            let _mb_adaptive_frame_field = r.bit()?;
        }
        let _direct_8x8_inference = r.bit()?;
        let frame_cropping = if r.bit()? {
            Some(FrameCropping {
                left: r.ue()?,
                right: r.ue()?,
                top: r.ue()?,
                bottom: r.ue()?,
            })
        } else {
            None
        };
        let vui_present = r.bit()?;

        // Crop units, §7.4.2.1.1 (equations 7-19 to 7-22).
        let frame_height_factor = if frame_mbs_only { 1 } else { 2 };
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (crop_unit_x, crop_unit_y) = match chroma_array_type {
            0 => (1, frame_height_factor),
            1 => (2, 2 * frame_height_factor),
            2 => (2, frame_height_factor),
            _ => (1, frame_height_factor),
        };
        let coded_width = u64::from(pic_width_in_mbs) * 16;
        let coded_height = u64::from(pic_height_in_map_units) * 16 * frame_height_factor;
        let crop = frame_cropping.unwrap_or_default();
        let crop_x = crop_unit_x * (u64::from(crop.left) + u64::from(crop.right));
        let crop_y = crop_unit_y * (u64::from(crop.top) + u64::from(crop.bottom));
        if crop_x >= coded_width || crop_y >= coded_height {
            return Err(H264Error::BadCropping);
        }

        Ok(Self {
            profile_idc,
            constraint_flags,
            level_idc,
            id,
            chroma_format_idc,
            separate_colour_plane,
            bit_depth_luma,
            bit_depth_chroma,
            log2_max_frame_num,
            pic_order_cnt_type,
            max_num_ref_frames,
            pic_width_in_mbs,
            pic_height_in_map_units,
            frame_mbs_only,
            frame_cropping,
            vui_present,
            // Both below 2^21: the bounds above make the casts lossless.
            width: (coded_width - crop_x) as u32,
            height: (coded_height - crop_y) as u32,
        })
    }

    /// The RFC 6381 `codecs` value, e.g. `avc1.640028`, for HLS playlists and MSE.
    pub fn codec_string(&self) -> String {
        codec_string(self.profile_idc, self.constraint_flags, self.level_idc)
    }
}

/// `avc1.PPCCLL` from profile, constraint byte and level (RFC 6381 §3.3).
pub(crate) fn codec_string(profile: u8, constraints: u8, level: u8) -> String {
    format!("avc1.{profile:02x}{constraints:02x}{level:02x}")
}

/// Skips `scaling_list()` (§7.3.2.1.1.1); only its length in bits matters here.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), H264Error> {
    let mut last_scale = 8i64;
    let mut next_scale = 8i64;
    for _ in 0..size {
        if next_scale != 0 {
            let delta = i64::from(r.se()?);
            next_scale = (last_scale + delta + 256).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// The identifiers of a picture parameter set.
///
/// ```
/// use skylark_media::h264::Pps;
///
/// let pps = Pps::parse(&[0x68, 0xce, 0x38, 0x80])?;
/// assert_eq!((pps.id, pps.sps_id), (0, 0));
/// # Ok::<(), skylark_media::h264::H264Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pps {
    /// `pic_parameter_set_id`, 0–255.
    pub id: u32,
    /// `seq_parameter_set_id` of the SPS it refers to, 0–31.
    pub sps_id: u32,
}

impl Pps {
    /// Parses the start of a PPS NAL unit, header byte included.
    pub fn parse(nal: &[u8]) -> Result<Self, H264Error> {
        let ty = nal_type(nal).ok_or(H264Error::Empty)?;
        if ty != NAL_PPS {
            return Err(H264Error::UnexpectedNalType {
                expected: NAL_PPS,
                found: ty,
            });
        }
        // Only the first few bytes are needed; avoid copying a large PPS.
        let head = &nal[1..nal.len().min(16)];
        let rbsp = remove_emulation_prevention(head);
        let mut r = BitReader::new(&rbsp);
        Ok(Self {
            id: r.ue_max("pic_parameter_set_id", 255)?,
            sps_id: r.ue_max("seq_parameter_set_id", 31)?,
        })
    }
}
