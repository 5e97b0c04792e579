use std::sync::LazyLock;

use hashbrown::HashMap;

use super::utils::{TrigramsWithPositions, get_trigrams_with_positions};
use super::{ARABIC_LANGS, CYRILLIC_LANGS, DEVANAGARI_LANGS, HEBREW_LANGS, LATIN_LANGS};
use super::LangProfileList;
use super::{MAX_TOTAL_DISTANCE, MAX_TRIGRAM_DISTANCE, Trigram};
use crate::Lang;
use crate::core::{FilterList, Info, InternalQuery, Text, calculate_confidence};
use crate::scripts::grouping::MultiLangScript;

#[derive(Debug)]
pub struct RawOutcome {
    pub trigrams_count: usize,
    #[allow(dead_code)]
    pub raw_distances: Vec<(Lang, u32)>,
    pub scores: Vec<(Lang, f64)>,
}

#[inline]
pub fn detect(iquery: &InternalQuery) -> Option<Info> {
    let raw_outcome = raw_detect(iquery);
    let RawOutcome {
        trigrams_count,
        scores,
        ..
    } = raw_outcome;

    let mut raw_scores_iter = scores.into_iter();

    let opt_lang_score1 = raw_scores_iter.next();
    let opt_lang_score2 = raw_scores_iter.next();

    // TODO: Logic is duplicated in alphabets. Consider refactoring
    opt_lang_score1.map(|(lang1, score1)| {
        let script = iquery.multi_lang_script.to_script();
        let confidence = if let Some((_, score2)) = opt_lang_score2 {
            calculate_confidence(score1, score2, trigrams_count)
        } else {
            1.0
        };
        Info::new(script, lang1, confidence)
    })
}

#[inline]
pub fn raw_detect(iquery: &InternalQuery) -> RawOutcome {
    let profiles = script_to_profiles(iquery.multi_lang_script);
    calculate_scores_in_profiles(&iquery.text, iquery.filter_list, profiles)
}

// Patched: each script's profiles are also kept inverted (see `InvertedProfiles`).
static LATIN: LazyLock<InvertedProfiles> = LazyLock::new(|| InvertedProfiles::new(LATIN_LANGS));
static CYRILLIC: LazyLock<InvertedProfiles> = LazyLock::new(|| InvertedProfiles::new(CYRILLIC_LANGS));
static ARABIC: LazyLock<InvertedProfiles> = LazyLock::new(|| InvertedProfiles::new(ARABIC_LANGS));
static DEVANAGARI: LazyLock<InvertedProfiles> = LazyLock::new(|| InvertedProfiles::new(DEVANAGARI_LANGS));
static HEBREW: LazyLock<InvertedProfiles> = LazyLock::new(|| InvertedProfiles::new(HEBREW_LANGS));

fn script_to_profiles(script: MultiLangScript) -> &'static InvertedProfiles {
    use MultiLangScript as MLS;
    match script {
        MLS::Latin => &LATIN,
        MLS::Cyrillic => &CYRILLIC,
        MLS::Arabic => &ARABIC,
        MLS::Devanagari => &DEVANAGARI,
        MLS::Hebrew => &HEBREW,
    }
}

/// A script's language profiles, and for each trigram in any of them where it stands in
/// each profile that holds it.
///
/// A language's distance from a text sums, over its profile's trigrams, the difference of
/// the trigram's rank in the profile and in the text, or `MAX_TRIGRAM_DISTANCE` where the
/// text lacks it. Looking up every profile trigram in the text costs a lookup per trigram
/// per language (11,100 for the Latin script); the same sum starts from the distance of a
/// text that has none of them and corrects it for the trigrams the text does have, one
/// lookup per text trigram.
struct InvertedProfiles {
    list: LangProfileList,
    /// Trigram -> (index of the language in `list`, rank in its profile).
    ranks: HashMap<Trigram, Vec<(u16, u16)>>,
}

impl InvertedProfiles {
    fn new(list: LangProfileList) -> Self {
        let mut ranks: HashMap<Trigram, Vec<(u16, u16)>> = HashMap::new();
        for (lang_index, &(_, profile)) in list.iter().enumerate() {
            for (rank, &trigram) in profile.iter().enumerate() {
                ranks.entry(trigram).or_default().push((lang_index as u16, rank as u16));
            }
        }
        Self { list, ranks }
    }
}

#[inline]
fn calculate_scores_in_profiles(
    text: &Text,
    filter_list: &FilterList,
    profiles: &InvertedProfiles,
) -> RawOutcome {
    let mut lang_distances: Vec<(Lang, u32)> = vec![];

    let TrigramsWithPositions {
        trigram_positions, ..
    } = get_trigrams_with_positions(&text.lowercase());
    let unique_trigrams_count = trigram_positions.len();

    // Per language, what the text's trigrams take from the distance of a text without them.
    let mut matched = vec![0i64; profiles.list.len()];
    for (trigram, &position) in &trigram_positions {
        for &(lang_index, rank) in profiles.ranks.get(trigram).into_iter().flatten() {
            let dist = (position as i32 - rank as i32).unsigned_abs();
            matched[lang_index as usize] += i64::from(dist) - i64::from(MAX_TRIGRAM_DISTANCE);
        }
    }

    for (&(lang, lang_trigrams), &matched) in profiles.list.iter().zip(&matched) {
        if !filter_list.is_allowed(lang) {
            continue;
        }
        let dist = calculate_distance(lang_trigrams.len(), matched, unique_trigrams_count);
        lang_distances.push(((lang), dist));
    }

    // Sort languages by distance
    lang_distances.sort_unstable_by_key(|(_, dist)| *dist);

    let max_dist = unique_trigrams_count as u32 * MAX_TRIGRAM_DISTANCE;

    let raw_scores = lang_distances
        .iter()
        .map(|&(lang, distance)| (lang, distance_to_raw_score(distance, max_dist)))
        .collect();

    RawOutcome {
        trigrams_count: unique_trigrams_count,
        scores: raw_scores,
        raw_distances: lang_distances,
    }
}

/// The distance of a profile of `profile_len` trigrams from a text of `text_trigrams` unique
/// trigrams, given what the text's trigrams found in the profile take from it (`matched`).
/// The arithmetic is upstream's, on `u32` (wrapping as a release build does).
#[inline]
fn calculate_distance(profile_len: usize, matched: i64, text_trigrams: usize) -> u32 {
    let mut total_dist = (profile_len as i64 * i64::from(MAX_TRIGRAM_DISTANCE) + matched) as u32;

    let count = text_trigrams as u32;

    if MAX_TRIGRAM_DISTANCE > count {
        let delta = MAX_TRIGRAM_DISTANCE - count;
        total_dist = total_dist.wrapping_sub(delta * MAX_TRIGRAM_DISTANCE);
    }

    total_dist.clamp(0, MAX_TOTAL_DISTANCE)
}

#[inline]
fn distance_to_raw_score(distance: u32, max_distance: u32) -> f64 {
    let similarity = max_distance - distance;
    similarity as f64 / max_distance as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_when_german_is_given() {
        let text = "Die Ordnung muss für immer in diesem Codebase bleiben";
        let iq = InternalQuery {
            text: Text::new(text),
            filter_list: &FilterList::default(),
            multi_lang_script: MultiLangScript::Latin,
        };
        let raw_outcome = raw_detect(&iq);

        assert_eq!(raw_outcome.trigrams_count, 50);

        let &(first_lang, first_score) = raw_outcome.scores.first().unwrap();
        let &(_last_lang, last_score) = raw_outcome.scores.last().unwrap();

        assert_eq!(first_lang, Lang::Deu);

        assert!(first_score >= 0.0);
        assert!(first_score <= 1.0);

        assert!(last_score >= 0.0);
        assert!(last_score <= 1.0);
    }
}
