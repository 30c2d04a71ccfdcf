"""Sharpness-aware minimization (Foret et al. 2021): each step takes its gradient at the worst
point within a small ball around the weights, which favours flat minima; it is known to hold up
under label noise, which FER2013's labels have. It costs a second forward and backward pass.

The TensorFlow backend only: Keras 3 has no backend-neutral gradient call inside `train_step`."""
import keras


def trainer(augment, net, rho):
    """A model that trains NET on AUGMENT's views by SAM with radius RHO (as `fit` would train
    `Sequential([augment, net])`; the view is drawn once, so both passes see the same faces)."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"--sam needs the TensorFlow backend (KERAS_BACKEND is {keras.backend.backend()})")
    import tensorflow as tf

    class SAM(keras.Sequential):
        def train_step(self, data):
            x, y = data[:2]
            x = augment(x, training=True)
            weights = net.trainable_variables
            with tf.GradientTape() as tape:
                y_pred = net(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
            grads = tape.gradient(loss, weights)
            scale = rho / (tf.linalg.global_norm(grads) + 1e-12)
            steps = [g * scale for g in grads]
            # The perturbed pass must not move batch-norm statistics: they belong to the weights.
            stats = [tf.identity(v.value) for v in net.non_trainable_variables]
            for w, s in zip(weights, steps):
                w.assign_add(s)
            with tf.GradientTape() as tape:
                sharp_loss = self.compute_loss(x=x, y=y, y_pred=net(x, training=True))
            grads = tape.gradient(sharp_loss, weights)
            for w, s in zip(weights, steps):
                w.assign_sub(s)
            for v, s in zip(net.non_trainable_variables, stats):
                v.assign(s)
            self.optimizer.apply(grads, weights)
            self._loss_tracker.update_state(loss)
            return self.compute_metrics(x, y, y_pred)

    return SAM([keras.Input(net.input_shape[1:]), augment, net], name="sam")
