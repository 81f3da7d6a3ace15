//! `Ts`: an instant stored as `timestamptz` on PostgreSQL and as fixed-width RFC 3339 text on
//! SQLite, so that SQLite compares instants correctly as strings.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ts(pub DateTime<Utc>);

impl Ts {
    /// Now, truncated to microseconds (what PostgreSQL keeps), so a value read back equals the
    /// value written on both engines.
    pub fn now() -> Ts {
        Ts(Utc::now().trunc_subsecs(6))
    }

    pub fn from(dt: DateTime<Utc>) -> Ts {
        Ts(dt.trunc_subsecs(6))
    }

    pub(crate) fn to_sqlite_text(self) -> String {
        self.0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.to_sqlite_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let s = <&str as Decode<'r, Sqlite>>::decode(value)?;
        Ok(Ts(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc)))
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Ts(<DateTime<Utc> as Decode<'r, Postgres>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_text_is_fixed_width_and_sorts_like_time() {
        let a = Ts(DateTime::parse_from_rfc3339("2026-11-28T17:43:20Z")
            .unwrap()
            .with_timezone(&Utc));
        let b = Ts(DateTime::parse_from_rfc3339("2026-11-28T17:43:20.5Z")
            .unwrap()
            .with_timezone(&Utc));
        let c = Ts(DateTime::parse_from_rfc3339("2026-11-28T17:43:20.000123Z")
            .unwrap()
            .with_timezone(&Utc));
        let (ta, tb, tc) = (a.to_sqlite_text(), b.to_sqlite_text(), c.to_sqlite_text());
        assert_eq!(ta, "2026-11-28T17:43:20.000000Z");
        assert_eq!(ta.len(), tb.len());
        assert!(ta < tc && tc < tb);
    }
}
