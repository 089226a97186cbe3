//! The data set: about 1000 generated properties, the same on every run (seeded SplitMix64).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The SplitMix64 finaliser: a good 64-bit mix of `z`.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A uniform float in `[0, 1)` from 64 random bits.
pub(crate) fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: tiny, fast, and the same sequence for the same seed on every machine.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// A number in `lo..=hi` (the modulo bias is negligible for these small ranges).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub(crate) fn unit(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

/// SplitMix64 over an atomic counter, for randomness shared by concurrent requests.
pub(crate) struct AtomicRng(AtomicU64);

impl AtomicRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub(crate) fn unit(&self) -> f64 {
        let state = self
            .0
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        unit_f64(mix64(state))
    }
}

// ------------------------------------------------------------------------------------------------
// Data set
// ------------------------------------------------------------------------------------------------

pub(crate) const DATA_SET_SIZE: u64 = 1_000;
pub(crate) const DATA_SEED: u64 = 0x5EED_0F7E;
/// 2024-01-01T00:00:00Z: `updated_at` of the generated properties is within 90 days of it.
const BASE_UNIX_SECS: u64 = 1_704_067_200;

const CITIES: [&str; 12] = [
    "Lisbon",
    "Porto",
    "Madrid",
    "Barcelona",
    "Paris",
    "Lyon",
    "Berlin",
    "Hamburg",
    "Amsterdam",
    "Rotterdam",
    "Vienna",
    "Prague",
];
/// Rent multiplier per city, in percent, same order as [`CITIES`].
const CITY_RENT_PCT: [u64; 12] = [90, 75, 105, 110, 160, 85, 115, 100, 150, 95, 100, 70];
const NAME_FIRST: [&str; 10] = [
    "Maple",
    "Cedar",
    "Harbor",
    "Riverside",
    "Oak",
    "Willow",
    "Summit",
    "Garden",
    "Lakeside",
    "Station",
];
const NAME_SECOND: [&str; 8] = [
    "Court",
    "Heights",
    "Residences",
    "Lofts",
    "House",
    "Terrace",
    "Apartments",
    "Place",
];
const STREETS: [&str; 10] = [
    "Main Street",
    "Park Avenue",
    "Canal Road",
    "Market Square",
    "Church Lane",
    "Station Road",
    "Mill Street",
    "Harbour Way",
    "Elm Grove",
    "King's Road",
];
const AMENITIES: [&str; 10] = [
    "balcony",
    "elevator",
    "parking",
    "dishwasher",
    "washing_machine",
    "air_conditioning",
    "storage_room",
    "bike_storage",
    "garden",
    "concierge",
];
const MANAGERS: [&str; 6] = ["ana", "bruno", "chloe", "dmitri", "elena", "farid"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Available,
    Leased,
    Maintenance,
}

impl Status {
    pub(crate) const ALL: [Status; 3] = [Status::Available, Status::Leased, Status::Maintenance];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Available => "available",
            Status::Leased => "leased",
            Status::Maintenance => "maintenance",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Property {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) postal_code: String,
    pub(crate) city: String,
    pub(crate) status: Status,
    pub(crate) monthly_rent: u32,
    pub(crate) bedrooms: u8,
    pub(crate) bathrooms: u8,
    pub(crate) square_meters: u32,
    pub(crate) year_built: u16,
    pub(crate) amenities: Vec<&'static str>,
    pub(crate) manager_email: String,
    pub(crate) description: String,
    /// Unix seconds.
    pub(crate) updated_at: u64,
    /// Bumped on every change; part of the `ETag`.
    pub(crate) version: u64,
}

impl Property {
    pub(crate) fn etag(&self) -> String {
        format!("\"{}-{}\"", self.id, self.version)
    }

    /// One generated property; the same `id` and `seed` always give the same property.
    pub(crate) fn generate(id: u64, seed: u64) -> Self {
        let mut rng = SplitMix64::new(mix64(seed ^ id.wrapping_mul(GOLDEN_GAMMA)));
        let city_idx = rng.next_u64() as usize % CITIES.len();
        let city = CITIES[city_idx];
        let bedrooms = rng.range(0, 5) as u8;
        let bathrooms = 1 + u8::from(bedrooms >= 3) + u8::from(rng.unit() < 0.2);
        let square_meters = 28 + u64::from(bedrooms) * 22 + rng.range(0, 25);
        let base_rent = 450 + u64::from(bedrooms) * 320 + rng.range(0, 400);
        let monthly_rent = (base_rent * CITY_RENT_PCT[city_idx] / 100 / 5 * 5) as u32;
        let status = match rng.unit() {
            x if x < 0.62 => Status::Leased,
            x if x < 0.90 => Status::Available,
            _ => Status::Maintenance,
        };
        let mut amenities: Vec<&'static str> = AMENITIES
            .iter()
            .copied()
            .filter(|_| rng.unit() < 0.35)
            .collect();
        amenities.truncate(5);
        let name = format!(
            "{} {} {}",
            rng.pick(&NAME_FIRST),
            rng.pick(&NAME_SECOND),
            id
        );
        let address = format!("{} {}", rng.range(1, 240), rng.pick(&STREETS));
        let year_built = rng.range(1890, 2023) as u16;
        let description = format!(
            "{} of {} m² in {}, built in {}, {} bathroom{}; {}.",
            if bedrooms == 0 {
                "Studio".to_owned()
            } else {
                format!("{bedrooms}-bedroom home")
            },
            square_meters,
            city,
            year_built,
            bathrooms,
            if bathrooms == 1 { "" } else { "s" },
            if amenities.is_empty() {
                "no extras".to_owned()
            } else {
                format!("with {}", amenities.join(", ").replace('_', " "))
            }
        );
        Self {
            id,
            name,
            address,
            postal_code: format!("{:05}", rng.range(1000, 99_999)),
            city: city.to_owned(),
            status,
            monthly_rent,
            bedrooms,
            bathrooms,
            square_meters: square_meters as u32,
            year_built,
            amenities,
            manager_email: format!("{}@example-estates.com", rng.pick(&MANAGERS)),
            description,
            updated_at: BASE_UNIX_SECS + rng.range(0, 90 * 86_400),
            version: 1,
        }
    }
}

/// Every property, ordered by id (ids only grow, so lookups are binary searches).
pub(crate) struct Store {
    pub(crate) properties: Vec<Property>,
    pub(crate) next_id: u64,
}

impl Store {
    pub(crate) fn generate(count: u64, seed: u64) -> Self {
        Self {
            properties: (1..=count).map(|id| Property::generate(id, seed)).collect(),
            next_id: count + 1,
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Property> {
        self.properties
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.properties[i])
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(BASE_UNIX_SECS)
}
