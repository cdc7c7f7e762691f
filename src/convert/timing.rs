//! Modeled times of sites, dense or as decided, and the layout each factored site gets.

use super::{ConvertOptions, Decision, Layout, Site, SizeSource};
use crate::error::Result;
use crate::scheme::SchemeKind;
use crate::time::{self, TimeModel, TimedNode};
use std::time::Duration;

impl Site {
    /// The input the site's time is modeled at: `None` when its size is unknown or costs are
    /// counted per output position (a time needs a real size).
    fn time_input(&self) -> Option<(usize, usize)> {
        self.input.filter(|_| self.size != SizeSource::PerPosition)
    }

    /// The nodes of the dense layer or of its factors in `layout`, when the size is known.
    fn nodes(&self, factored: Option<(SchemeKind, usize, Layout)>) -> Result<Option<Vec<TimedNode>>> {
        let Some(input) = self.time_input() else { return Ok(None) };
        let (f, shape) = (&self.found, self.shape());
        let mut nodes = match factored {
            None => time::dense_nodes(&f.name, &shape, &f.geometry, input)?,
            Some((scheme, rank, layout)) => {
                time::layout_nodes(&f.name, scheme, layout, &shape, &f.geometry, rank, input)?
            }
        };
        nodes.extend_from_slice(&f.context);
        Ok(Some(nodes))
    }

    /// The modeled time of the nodes that run next to the layer whatever it becomes
    /// ([`Found::context`](super::Found)).
    pub fn context_time(&self, model: &TimeModel) -> Duration {
        model.nodes(&self.found.context)
    }

    /// The dense layer's modeled time, when its size is known.
    pub fn dense_time(&self, model: &TimeModel) -> Result<Option<Duration>> {
        Ok(self.nodes(None)?.map(|n| model.nodes(&n)))
    }

    /// The modeled time of the site as decided, when its size is known.
    pub fn decided_time(&self, decision: &Decision, model: &TimeModel) -> Result<Option<Duration>> {
        match decision {
            Decision::Skip(_) => self.dense_time(model),
            Decision::Convert { scheme, rank, layout } => {
                let layout = layout.unwrap_or(Layout::Multiplier1);
                Ok(self.nodes(Some((*scheme, *rank, layout)))?.map(|n| model.nodes(&n)))
            }
        }
    }

    /// The layout of `scheme`'s factors at `rank`: the forced one ([`ConvertOptions::layout`])
    /// when the scheme has it, else the fastest by the time model when the size is known, else
    /// the scheme's first; `None` for a scheme with one layout.
    pub fn layout_for(&self, scheme: SchemeKind, rank: usize, options: &ConvertOptions) -> Result<Option<Layout>> {
        let choices = time::layout_choices(scheme, options.layout);
        let Some(&first) = choices.first() else { return Ok(None) };
        if choices.len() == 1 {
            return Ok(Some(first));
        }
        let mut best: Option<(Layout, Duration)> = None;
        for &l in &choices {
            let Some(nodes) = self.nodes(Some((scheme, rank, l)))? else { return Ok(Some(first)) };
            let t = options.time.nodes(&nodes);
            if best.is_none_or(|(_, b)| t < b) {
                best = Some((l, t));
            }
        }
        Ok(best.map(|(l, _)| l))
    }
}
