//! The EMA teacher update: teacher <- m * teacher + (1 - m) * student, parameter by parameter.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

struct Collect<B: Backend> {
    values: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let v = param.val();
        let n = v.shape().num_elements();
        self.values.push(v.reshape([n]));
    }
}

struct Blend<B: Backend> {
    student: std::vec::IntoIter<Tensor<B, 1>>,
    momentum: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let s = self
            .student
            .next()
            .expect("teacher and student have the same parameters");
        let m = self.momentum;
        param.map(|t| {
            let shape = t.shape();
            t.mul_scalar(m) + s.reshape(shape).mul_scalar(1.0 - m)
        })
    }
}

/// `teacher <- momentum * teacher + (1 - momentum) * student` for two modules of the same
/// architecture (the student typically `valid()` of the trained module, on the same backend).
pub fn ema_update<B: Backend, M: Module<B>>(teacher: M, student: &M, momentum: f64) -> M {
    let mut collect = Collect { values: Vec::new() };
    student.visit(&mut collect);
    let mut blend = Blend {
        student: collect.values.into_iter(),
        momentum,
    };
    teacher.map(&mut blend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vit::{VisionTransformer, VitConfig};
    use burn::backend::Flex;

    #[test]
    fn blends_every_parameter() {
        let cfg = VitConfig::tiny("vits14_reg", 16, 2, 2);
        let device = Default::default();
        let teacher = VisionTransformer::<Flex>::init(&cfg, &device);
        let student = VisionTransformer::<Flex>::init(&cfg, &device);
        let (t0, s0) = (teacher.to_state(), student.to_state());
        let t1 = ema_update(teacher, &student, 0.9).to_state();
        for (k, t) in &t0 {
            let want: Vec<f32> = t
                .data
                .iter()
                .zip(&s0[k].data)
                .map(|(a, b)| 0.9 * a + 0.1 * b)
                .collect();
            let err = want
                .iter()
                .zip(&t1[k].data)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-6, "{k}: {err}");
        }
    }
}
