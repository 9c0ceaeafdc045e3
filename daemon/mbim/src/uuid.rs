//! Service and context UUIDs, kept in MBIM's wire byte order (the order they are written in).

use std::{fmt, str::FromStr};

/// A 16-byte UUID exactly as MBIM puts it on the wire: the canonical string's bytes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub const BASIC_CONNECT: Self = Self::from_u128(0xa289cc33_bcbb_8b4f_b6b0_133ec2aae6df);
    pub const SMS: Self = Self::from_u128(0x533fbeeb_14fe_4467_9f90_33a223e56c3f);
    pub const USSD: Self = Self::from_u128(0xe550a0c8_5e82_479e_82f7_10abf4c3351f);
    pub const PHONEBOOK: Self = Self::from_u128(0x4bf38476_1e6a_41db_b1d8_bed289c25bdb);
    pub const STK: Self = Self::from_u128(0xd8f20131_fcb5_4e17_8602_d6ed3816164c);
    pub const AUTH: Self = Self::from_u128(0x1d2b5ff7_0aa1_48b2_aa52_50f15767174e);
    pub const DSS: Self = Self::from_u128(0xc08a26dd_7718_4382_8482_6e0d583c4d0e);
    pub const MS_BASIC_CONNECT_EXTENSIONS: Self = Self::from_u128(0x3d01dcc5_fef5_4d05_0d3a_bef7058e9aaf);
    pub const MS_UICC_LOW_LEVEL_ACCESS: Self = Self::from_u128(0xc2f6588e_f037_4bc9_8665_f4d44bd09367);
    pub const MS_SAR: Self = Self::from_u128(0x68223d04_9f6c_4e0f_822d_28441fb72340);
    pub const MS_FIRMWARE_ID: Self = Self::from_u128(0xe9f7dea2_feaf_4009_93ce_90a3694103b6);
    pub const MS_HOST_SHUTDOWN: Self = Self::from_u128(0x883b7c26_985f_43fa_9804_27d7fb80959c);
    /// Qualcomm's QMI-over-MBIM tunnel.
    pub const QMI: Self = Self::from_u128(0xd1a30bc2_f97a_6e43_bf65_c7e24fb0f0d3);
    /// libmbim's mbim-proxy handshake service; never sent to a real device.
    pub const PROXY_CONTROL: Self = Self::from_u128(0x838cf7fb_8d0d_4d7f_871e_d71dbefbb39b);
    /// The "internet" context type of CONNECT.
    pub const CONTEXT_INTERNET: Self = Self::from_u128(0x7e5e2a7e_4e6f_7272_736b_656e7e5e2a7e);

    /// The UUID whose canonical string is this number written in hex.
    pub const fn from_u128(value: u128) -> Self {
        Self(value.to_be_bytes())
    }

    /// The service name libmbim prints, if this codec knows the UUID.
    pub fn service_name(self) -> Option<&'static str> {
        Some(match self {
            Self::BASIC_CONNECT => "basic-connect",
            Self::SMS => "sms",
            Self::USSD => "ussd",
            Self::PHONEBOOK => "phonebook",
            Self::STK => "stk",
            Self::AUTH => "auth",
            Self::DSS => "dss",
            Self::MS_BASIC_CONNECT_EXTENSIONS => "ms-basic-connect-extensions",
            Self::MS_UICC_LOW_LEVEL_ACCESS => "ms-uicc-low-level-access",
            Self::MS_SAR => "ms-sar",
            Self::MS_FIRMWARE_ID => "ms-firmware-id",
            Self::MS_HOST_SHUTDOWN => "ms-host-shutdown",
            Self::QMI => "qmi",
            Self::PROXY_CONTROL => "proxy-control",
            _ => return None,
        })
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a string is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a UUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")]
pub struct ParseUuidError {
    pub input: String,
}

impl FromStr for Uuid {
    type Err = ParseUuidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseUuidError { input: s.to_owned() };
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(err());
        }
        let hex: String = groups.concat();
        u128::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(Self::from_u128)
            .ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_is_string_order() {
        assert_eq!(
            Uuid::BASIC_CONNECT.0,
            [
                0xa2, 0x89, 0xcc, 0x33, 0xbc, 0xbb, 0x8b, 0x4f, 0xb6, 0xb0, 0x13, 0x3e, 0xc2, 0xaa, 0xe6, 0xdf
            ]
        );
        assert_eq!(Uuid::QMI.to_string(), "d1a30bc2-f97a-6e43-bf65-c7e24fb0f0d3");
        assert_eq!(
            "c2f6588e-f037-4bc9-8665-f4d44bd09367".parse(),
            Ok(Uuid::MS_UICC_LOW_LEVEL_ACCESS)
        );
        assert!("c2f6588e-f037-4bc9-8665-f4d44bd0936".parse::<Uuid>().is_err());
        assert!("+2f6588e-f037-4bc9-8665-f4d44bd09367".parse::<Uuid>().is_err());
    }
}
